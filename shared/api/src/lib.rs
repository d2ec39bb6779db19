//! crm-export-api (placeholder until its issue lands)
