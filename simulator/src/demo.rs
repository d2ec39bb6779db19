//! The built-in demo org (`orgs/demo-contacts.json`: a Contact object shaped like the
//! coral-cloud data, a birthdate validation rule) and its connected app, shared by `crmx`
//! (`sim`, `demo`) and the benchmark.

use crate::{OrgDefinition, SimError};

const ORG: &str = include_str!("../orgs/demo-contacts.json");

/// The demo org's connected app.
pub const CLIENT_ID: &str = "crmx-demo-client";
pub const CLIENT_SECRET: &str = "crmx-demo-secret";

/// The demo org definition.
pub fn org() -> Result<OrgDefinition, SimError> {
    serde_json::from_str(ORG).map_err(|e| SimError::ParseOrg {
        path: "simulator/orgs/demo-contacts.json".into(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_org_parses_and_names_its_client() {
        let org = super::org().unwrap();
        assert!(org.objects.contains_key("Contact"));
        assert!(super::ORG.contains(super::CLIENT_ID) && super::ORG.contains(super::CLIENT_SECRET));
    }
}
