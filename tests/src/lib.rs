//! crm-export-tests (placeholder until its issue lands)
