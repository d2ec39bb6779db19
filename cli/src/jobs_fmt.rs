//! How a job definition reads for people.

use crm_export_core::JobDefinition;

pub fn describe_job(def: &JobDefinition) -> String {
    let mut s = format!("{} upserted on {}", def.object, def.external_id_field);
    if let Some(k) = &def.key_field {
        s.push_str(&format!(", key from {k}"));
    }
    s.push_str(if def.key_case_insensitive {
        ", keys case-insensitive"
    } else {
        ", keys case-sensitive"
    });
    if def.field_map.is_empty() {
        s.push_str(", fields sent as named");
    } else {
        s.push_str(&format!(", {} mapped fields", def.field_map.len()));
    }
    s
}
