//! crm-export-sqlite (placeholder until its issue lands)
