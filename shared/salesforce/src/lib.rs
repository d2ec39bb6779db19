//! crm-export-salesforce (placeholder until its issue lands)
