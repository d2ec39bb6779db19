//! sf-simulator (placeholder until its issue lands)
