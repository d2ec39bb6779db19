//! The benchmark's records, generated from the shape of the real contacts in
//! `data/coral-cloud/Contact-large.json`: the 941 distinct contacts (the newest version of
//! each key) are cycled, each generated record gets a unique `External_Id__c`
//! (`{original}-{cycle}`), and a Birthdate in the future is moved 50 years back so that the
//! demo org's validation rule refuses nothing (clean data). Records are made on demand from
//! their index, so N records never sit in memory at once.

use crate::error::{Context, Result};
use crm_export_core::{JobDefinition, JobId, NewRecord, RecordKey};
use serde_json::{Map, Value};
use sf_simulator::OrgDefinition;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// The bundled data (see data/coral-cloud/SOURCE.md).
const CONTACTS: &str = include_str!("../../data/coral-cloud/Contact-large.json");

pub const CONTACTS_PATH: &str = "data/coral-cloud/Contact-large.json";
pub const OBJECT: &str = "Contact";
pub const EXTERNAL_ID: &str = "External_Id__c";
pub const JOB: &str = "contacts";
pub use sf_simulator::demo::{CLIENT_ID, CLIENT_SECRET};

pub fn demo_org() -> Result<OrgDefinition> {
    sf_simulator::demo::org().ctx("the simulator's demo org does not parse")
}

/// The job every setting exports: Contacts upserted on `External_Id__c`, with the org's own
/// case rule for the field.
pub fn job_definition() -> Result<JobDefinition> {
    let org = demo_org()?;
    let case_insensitive = org
        .objects
        .get(OBJECT)
        .and_then(|o| o.fields.get(EXTERNAL_ID))
        .map(|f| f.case_insensitive())
        .ctx("the demo org has no Contact.External_Id__c")?;
    Ok(JobDefinition {
        job_id: JobId::new(JOB).ctx("job id")?,
        object: OBJECT.into(),
        external_id_field: EXTERNAL_ID.into(),
        key_field: None,
        key_case_insensitive: case_insensitive,
        field_map: BTreeMap::new(),
    })
}

/// The distinct contacts, ready to be cycled.
pub struct Contacts {
    base: Vec<Map<String, Value>>,
    case_insensitive: bool,
}

impl Contacts {
    /// Reads the bundled file; Birthdates after `today` are moved back 50 years.
    pub fn load(today: chrono::NaiveDate, def: &JobDefinition) -> Result<Self> {
        let doc: Value = serde_json::from_str(CONTACTS).ctx(CONTACTS_PATH)?;
        let records = doc
            .get("records")
            .and_then(Value::as_array)
            .ctx(format!("{CONTACTS_PATH} has no \"records\" array"))?;
        // The newest version of each key, in the order keys first appear.
        let mut position: HashMap<String, usize> = HashMap::new();
        let mut base: Vec<Map<String, Value>> = Vec::new();
        for r in records {
            let Value::Object(fields) = r else { continue };
            let Some(key) = fields.get(EXTERNAL_ID).and_then(Value::as_str) else {
                continue;
            };
            let mut fields = fields.clone();
            fields.remove("attributes");
            fix_birthdate(&mut fields, today);
            match position.get(key) {
                Some(&i) => base[i] = fields,
                None => {
                    position.insert(key.to_owned(), base.len());
                    base.push(fields);
                }
            }
        }
        if base.is_empty() {
            return Err(crate::BenchError::new(format!(
                "{CONTACTS_PATH} holds no contacts"
            )));
        }
        Ok(Self {
            base,
            case_insensitive: def.key_case_insensitive,
        })
    }

    /// Distinct contacts in the file (941).
    pub fn distinct(&self) -> usize {
        self.base.len()
    }

    /// The fields of generated record `i` (0-based): contact `i mod distinct`, with a key
    /// unique to `i`.
    pub fn fields(&self, i: usize) -> Map<String, Value> {
        let n = self.base.len();
        let mut fields = self.base[i % n].clone();
        let original = fields
            .get(EXTERNAL_ID)
            .and_then(Value::as_str)
            .unwrap_or("X")
            .to_owned();
        fields.insert(
            EXTERNAL_ID.into(),
            Value::String(format!("{original}-{}", i / n)),
        );
        fields
    }

    pub fn record(&self, i: usize) -> NewRecord {
        let fields = self.fields(i);
        let key = fields
            .get(EXTERNAL_ID)
            .and_then(Value::as_str)
            .and_then(|k| RecordKey::from_external_id(k, self.case_insensitive))
            .expect("generated keys are never blank");
        NewRecord { key, fields }
    }

    /// Records `range` of the N generated ones.
    pub fn records(&self, range: std::ops::Range<usize>) -> Vec<NewRecord> {
        range.map(|i| self.record(i)).collect()
    }

    /// Writes the first `n` records as NDJSON (one object of CRM fields per line), what the
    /// peer exporter reads.
    pub fn write_ndjson(&self, path: &Path, n: usize, def: &JobDefinition) -> Result<()> {
        let file = std::fs::File::create(path).ctx(format!("creating {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        for i in 0..n {
            let crm = def.to_crm_fields(&self.fields(i));
            serde_json::to_writer(&mut out, &crm).ctx("writing NDJSON")?;
            out.write_all(b"\n").ctx("writing NDJSON")?;
        }
        out.flush().ctx(format!("writing {}", path.display()))
    }
}

fn fix_birthdate(fields: &mut Map<String, Value>, today: chrono::NaiveDate) {
    use chrono::Datelike;
    let Some(date) = fields
        .get("Birthdate")
        .and_then(Value::as_str)
        .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
    else {
        return;
    };
    if date <= today {
        return;
    }
    let back = date
        .with_year(date.year() - 50)
        .or_else(|| chrono::NaiveDate::from_ymd_opt(date.year() - 50, date.month(), 28))
        .unwrap_or(chrono::NaiveDate::MIN);
    fields.insert(
        "Birthdate".into(),
        Value::String(back.format("%Y-%m-%d").to_string()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_records_are_unique_clean_and_shaped_like_the_contacts() {
        let def = job_definition().unwrap();
        let today = chrono::NaiveDate::from_ymd_opt(2025, 6, 1).unwrap();
        let c = Contacts::load(today, &def).unwrap();
        assert_eq!(c.distinct(), 941);
        let n = 3 * c.distinct() + 7;
        let records = c.records(0..n);
        let keys: std::collections::HashSet<_> = records.iter().map(|r| r.key.clone()).collect();
        assert_eq!(keys.len(), n, "every generated record has its own key");
        for r in &records {
            let id = r.fields[EXTERNAL_ID].as_str().unwrap();
            assert!(id.len() <= 20, "{id} fits the field's length");
            if let Some(b) = r.fields.get("Birthdate").and_then(Value::as_str) {
                let d = chrono::NaiveDate::parse_from_str(b, "%Y-%m-%d").unwrap();
                assert!(d <= today, "{id}: Birthdate {b} is in the future");
            }
        }
        // Same contact, next cycle: same fields but the key.
        let (a, b) = (c.fields(5), c.fields(5 + c.distinct()));
        assert_eq!(a["LastName"], b["LastName"]);
        assert_ne!(a[EXTERNAL_ID], b[EXTERNAL_ID]);
    }
}
