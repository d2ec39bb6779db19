//! crm-export-aws (placeholder until its issue lands)
