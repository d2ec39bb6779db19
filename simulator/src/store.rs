//! The org's records, with one hash index per external-id or unique field so that a
//! 200-record upsert costs 200 lookups whatever the org holds.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids;
use crate::org::{CompiledOrg, FieldDef, ObjectDef};

#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub id: String,
    /// The key it was created with (value of the upsert's external id field).
    pub external_id: String,
    pub fields: Map<String, Value>,
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A record as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordView {
    #[serde(rename = "Id")]
    pub id: String,
    pub external_id: String,
    /// 1 on create, +1 per successful write.
    pub version: u64,
    pub fields: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&Record> for RecordView {
    fn from(r: &Record) -> Self {
        RecordView {
            id: r.id.clone(),
            external_id: r.external_id.clone(),
            version: r.version,
            fields: r.fields.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Default)]
pub(crate) struct ObjectStore {
    pub records: Vec<Record>,
    /// field name -> normalised value -> positions in `records`.
    index: HashMap<String, HashMap<String, Vec<usize>>>,
}

pub(crate) struct Store {
    /// The org the indexes were built for; upserts apply against this one.
    pub org: Arc<CompiledOrg>,
    objects: HashMap<String, ObjectStore>,
    created: u64,
    /// Attempts seen per (object, rule kind + index, key), for `fail_attempts`.
    pub attempts: HashMap<(String, String, String), u32>,
}

/// The index key of a value of `field`, or None when it has no key (blank).
pub(crate) fn index_key(field: &FieldDef, value: &Value) -> Option<String> {
    let raw = match value {
        Value::Null => return None,
        Value::String(s) if s.is_empty() => return None,
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    };
    Some(if field.case_insensitive() {
        raw.to_lowercase()
    } else {
        raw
    })
}

fn indexed_fields(def: &ObjectDef) -> impl Iterator<Item = (&String, &FieldDef)> {
    def.fields.iter().filter(|(_, f)| f.external_id || f.unique)
}

impl Store {
    pub fn new(org: Arc<CompiledOrg>) -> Self {
        Store {
            org,
            objects: HashMap::new(),
            created: 0,
            attempts: HashMap::new(),
        }
    }

    /// Switches to a new org definition, keeping the records and rebuilding the indexes
    /// (external-id fields or their case rules may have changed).
    pub fn replace_org(&mut self, org: Arc<CompiledOrg>) {
        self.org = org;
        self.attempts.clear();
        for (name, obj) in self.objects.iter_mut() {
            obj.index.clear();
            let Some((_, def)) = self.org.object(name) else {
                continue;
            };
            for (pos, rec) in obj.records.iter().enumerate() {
                for (fname, fdef) in indexed_fields(def) {
                    if let Some(k) = rec.fields.get(fname).and_then(|v| index_key(fdef, v)) {
                        obj.index
                            .entry(fname.clone())
                            .or_default()
                            .entry(k)
                            .or_default()
                            .push(pos);
                    }
                }
            }
        }
    }

    pub fn total_records(&self) -> u64 {
        self.objects.values().map(|o| o.records.len() as u64).sum()
    }

    pub fn object(&self, name: &str) -> Option<&ObjectStore> {
        self.objects.get(name)
    }

    /// Positions of the records of `object` whose `field` has index key `key`.
    pub fn find(&self, object: &str, field: &str, key: &str) -> &[usize] {
        self.objects
            .get(object)
            .and_then(|o| o.index.get(field))
            .and_then(|i| i.get(key))
            .map_or(&[], Vec::as_slice)
    }

    pub fn record(&self, object: &str, pos: usize) -> &Record {
        &self.objects[object].records[pos]
    }

    pub fn next_id(&mut self, object: &str) -> String {
        self.created += 1;
        ids::record_id(self.org.key_prefix(object), self.created)
    }

    /// Adds a record and returns its position.
    pub fn insert(&mut self, object: &str, rec: Record) -> usize {
        let org = Arc::clone(&self.org);
        let obj = self.objects.entry(object.to_owned()).or_default();
        let pos = obj.records.len();
        if let Some((_, def)) = org.object(object) {
            for (fname, fdef) in indexed_fields(def) {
                if let Some(k) = rec.fields.get(fname).and_then(|v| index_key(fdef, v)) {
                    obj.index
                        .entry(fname.clone())
                        .or_default()
                        .entry(k)
                        .or_default()
                        .push(pos);
                }
            }
        }
        obj.records.push(rec);
        pos
    }

    /// Replaces the record at `pos` (same id), keeping the indexes right.
    pub fn replace(&mut self, object: &str, pos: usize, rec: Record) {
        let org = Arc::clone(&self.org);
        let Some(obj) = self.objects.get_mut(object) else {
            return;
        };
        if let Some((_, def)) = org.object(object) {
            for (fname, fdef) in indexed_fields(def) {
                let old = obj.records[pos]
                    .fields
                    .get(fname)
                    .and_then(|v| index_key(fdef, v));
                let new = rec.fields.get(fname).and_then(|v| index_key(fdef, v));
                if old == new {
                    continue;
                }
                let idx = obj.index.entry(fname.clone()).or_default();
                if let Some(k) = old {
                    if let Some(list) = idx.get_mut(&k) {
                        list.retain(|&p| p != pos);
                        if list.is_empty() {
                            idx.remove(&k);
                        }
                    }
                }
                if let Some(k) = new {
                    idx.entry(k).or_default().push(pos);
                }
            }
        }
        obj.records[pos] = rec;
    }

    /// Undoes `insert` of the last record (used to roll back a call).
    pub fn pop_last(&mut self, object: &str) {
        let org = Arc::clone(&self.org);
        let Some(obj) = self.objects.get_mut(object) else {
            return;
        };
        let Some(rec) = obj.records.pop() else {
            return;
        };
        let pos = obj.records.len();
        if let Some((_, def)) = org.object(object) {
            for (fname, fdef) in indexed_fields(def) {
                if let Some(k) = rec.fields.get(fname).and_then(|v| index_key(fdef, v)) {
                    if let Some(idx) = obj.index.get_mut(fname) {
                        if let Some(list) = idx.get_mut(&k) {
                            list.retain(|&p| p != pos);
                            if list.is_empty() {
                                idx.remove(&k);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Removes every record of an object; returns how many there were.
    pub fn clear(&mut self, object: &str) -> usize {
        self.objects.remove(object).map_or(0, |o| o.records.len())
    }
}
