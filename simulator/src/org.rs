//! The org definition file: objects, fields, rules, OAuth clients, limits. See README.md.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::error::SimError;
use crate::rules::Condition;

/// A whole simulated org. Serialised with serde; `load_org` reads one from a JSON file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgDefinition {
    /// The 18-character org id, used in access tokens and the identity URL.
    #[serde(default = "default_org_id")]
    pub org_id: String,
    /// The integration (run-as) user's id.
    #[serde(default = "default_user_id")]
    pub user_id: String,
    /// Inactivity after which an access token stops working (each REST call resets it).
    #[serde(default = "default_session_lifetime")]
    pub session_lifetime_secs: f64,
    /// Added to every token and REST call, outside any lock.
    #[serde(default)]
    pub latency_ms: u64,
    /// Pins "today" for date rules (`after_today`, `before_today`); the real date otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub today: Option<NaiveDate>,
    #[serde(default)]
    pub api: ApiAllocation,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default)]
    pub oauth: OAuthSettings,
    pub objects: BTreeMap<String, ObjectDef>,
}

fn default_org_id() -> String {
    crate::ids::with_checksum("00D5g00000SIMUL")
}
fn default_user_id() -> String {
    crate::ids::with_checksum("0055g00000SIMUL")
}
fn default_session_lifetime() -> f64 {
    7200.0
}
fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiAllocation {
    /// Total API requests allowed in the (simulated) rolling 24 h.
    #[serde(default = "default_api_max")]
    pub max: u64,
    /// Requests already used; every REST call adds one.
    #[serde(default)]
    pub used: u64,
    /// Requests allowed in flight at once; beyond it: 403 ConcurrentPerOrgLongTxn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_max: Option<u32>,
}

fn default_api_max() -> u64 {
    100_000
}

impl Default for ApiAllocation {
    fn default() -> Self {
        ApiAllocation {
            max: default_api_max(),
            used: 0,
            concurrent_max: None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// Records (all objects) the org can hold; creating one more fails STORAGE_LIMIT_EXCEEDED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_records: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSettings {
    /// false: every grant fails `inactive_user`.
    #[serde(default = "yes")]
    pub user_active: bool,
    /// false: every grant fails `inactive_org`.
    #[serde(default = "yes")]
    pub org_active: bool,
    #[serde(default)]
    pub clients: Vec<OAuthClient>,
}

impl Default for OAuthSettings {
    fn default() -> Self {
        OAuthSettings {
            user_active: true,
            org_active: true,
            clients: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    ClientCredentials,
    RefreshToken,
}

/// A connected app (or External Client App) the integration authenticates as.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: String,
    #[serde(default = "all_grants")]
    pub grants: Vec<GrantType>,
    /// Refresh tokens currently valid for this client. `GET /__sim/org` shows the live set
    /// (rotation replaces them).
    #[serde(default)]
    pub refresh_tokens: Vec<String>,
    /// Each refresh_token grant returns a new refresh token and revokes the one used.
    #[serde(default)]
    pub rotate_refresh_tokens: bool,
    /// Refuse refresh_token grants that do not carry the client secret.
    #[serde(default)]
    pub require_secret_for_refresh: bool,
    #[serde(default = "default_scope")]
    pub scope: String,
}

fn all_grants() -> Vec<GrantType> {
    vec![GrantType::ClientCredentials, GrantType::RefreshToken]
}
fn default_scope() -> String {
    "api refresh_token".into()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectDef {
    /// The 3-character id prefix (Contact 003, Account 001, ...); derived from the name if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    pub fields: BTreeMap<String, FieldDef>,
    #[serde(default)]
    pub validation_rules: Vec<ValidationRule>,
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    #[serde(default)]
    pub lock_contention: Vec<LockRule>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    String,
    Textarea,
    Email,
    Phone,
    Url,
    Date,
    Datetime,
    #[serde(alias = "double", alias = "int", alias = "currency", alias = "percent")]
    Number,
    #[serde(alias = "checkbox")]
    Boolean,
    Picklist,
}

impl FieldType {
    pub fn is_text(self) -> bool {
        matches!(
            self,
            FieldType::String
                | FieldType::Textarea
                | FieldType::Email
                | FieldType::Phone
                | FieldType::Url
                | FieldType::Picklist
        )
    }

    pub fn default_length(self) -> Option<u32> {
        match self {
            FieldType::String | FieldType::Textarea | FieldType::Url | FieldType::Picklist => {
                Some(255)
            }
            FieldType::Email => Some(80),
            FieldType::Phone => Some(40),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// Shown in error messages ("Last Name: data value too large..."); defaults to the API name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Maximum characters for text types; each type has Salesforce's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u32>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub picklist_values: Vec<String>,
    /// A restricted picklist refuses values not in `picklist_values`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub restricted: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub external_id: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub unique: bool,
    /// Only for unique fields: false (the default) makes "ABC" and "abc" the same value, for
    /// matching upsert keys and for uniqueness.
    #[serde(default, skip_serializing_if = "is_false")]
    pub case_sensitive: bool,
    /// false: a read-only field (formula, system); any write fails INVALID_FIELD_FOR_INSERT_UPDATE.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub updateable: bool,
    /// false: field-level security denies the integration user edit access; same error.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub fls_editable: bool,
}

impl FieldDef {
    pub fn new(kind: FieldType) -> Self {
        FieldDef {
            kind,
            label: None,
            length: None,
            required: false,
            picklist_values: Vec::new(),
            restricted: false,
            external_id: false,
            unique: false,
            case_sensitive: false,
            updateable: true,
            fls_editable: true,
        }
    }

    pub fn max_length(&self) -> Option<u32> {
        self.length.or(self.kind.default_length())
    }

    /// Whether two values of this field are matched ignoring case.
    pub fn case_insensitive(&self) -> bool {
        self.unique && !self.case_sensitive
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationRule {
    pub name: String,
    #[serde(default = "yes")]
    pub active: bool,
    /// The record is refused when this is true (as in Salesforce's "Error Condition Formula").
    pub error_condition: Condition,
    pub message: String,
    /// The field the error is shown at; `fields` of the error is empty without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_field: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerTiming {
    Before,
    After,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerEvent {
    Insert,
    Update,
}

/// An Apex trigger that fails for some records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    pub name: String,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default = "default_timing")]
    pub timing: TriggerTiming,
    #[serde(default = "default_events")]
    pub events: Vec<TriggerEvent>,
    /// Records it fails for; all records when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
    pub error: TriggerError,
    /// Fail only the first N attempts per external id (then it "gets through"); always if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_attempts: Option<u32>,
}

fn default_timing() -> TriggerTiming {
    TriggerTiming::Before
}
fn default_events() -> Vec<TriggerEvent> {
    vec![TriggerEvent::Insert, TriggerEvent::Update]
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TriggerError {
    /// Unhandled exception: CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY "T: execution of BeforeInsert
    /// caused by: <message>".
    Exception { message: String },
    /// `addError()`: FIELD_CUSTOM_VALIDATION_EXCEPTION with the message.
    AddError {
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
    },
    /// A DML in the trigger hit a row lock: CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY wrapping
    /// UNABLE_TO_LOCK_ROW.
    Lock,
    /// "Apex CPU time limit exceeded" for every record of the call when more than
    /// `max_records` records of the call match.
    CpuLimit {
        #[serde(default)]
        max_records: u32,
    },
}

/// Row-lock contention: matching records fail UNABLE_TO_LOCK_ROW.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockRule {
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
    /// Only these keys (of the upsert's external id field); all keys when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_ids: Vec<String>,
    /// Fail only the first N attempts per external id; always if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_attempts: Option<u32>,
}

/// Reads and checks an org definition file.
pub fn load_org(path: impl AsRef<Path>) -> Result<OrgDefinition, SimError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| SimError::ReadOrg {
        path: path.to_owned(),
        source,
    })?;
    let org: OrgDefinition = serde_json::from_str(&text).map_err(|e| SimError::ParseOrg {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    CompiledOrg::compile(org.clone()).map_err(|e| SimError::ParseOrg {
        path: path.to_owned(),
        message: match e {
            SimError::InvalidOrg(m) => m,
            other => other.to_string(),
        },
    })?;
    Ok(org)
}

/// A checked org definition with case-insensitive name lookups (Salesforce API names are
/// case-insensitive) and condition field names rewritten to the defined spelling.
#[derive(Debug)]
pub(crate) struct CompiledOrg {
    pub def: OrgDefinition,
    objects: HashMap<String, String>,
    fields: HashMap<String, HashMap<String, String>>,
    prefixes: HashMap<String, String>,
}

fn invalid(msg: impl Into<String>) -> SimError {
    SimError::InvalidOrg(msg.into())
}

impl CompiledOrg {
    pub fn compile(mut def: OrgDefinition) -> Result<Self, SimError> {
        if !(def.session_lifetime_secs.is_finite() && def.session_lifetime_secs > 0.0) {
            return Err(invalid("session_lifetime_secs must be a positive number"));
        }
        if def.org_id.trim().is_empty() || def.user_id.trim().is_empty() {
            return Err(invalid("org_id and user_id must not be empty"));
        }
        let mut client_ids = HashSet::new();
        for (i, c) in def.oauth.clients.iter().enumerate() {
            if c.client_id.is_empty() || !client_ids.insert(c.client_id.clone()) {
                return Err(invalid(format!(
                    "oauth.clients[{i}]: client_id must be non-empty and unique"
                )));
            }
            if c.grants.is_empty() {
                return Err(invalid(format!(
                    "oauth.clients[{i}] ({}): grants must not be empty",
                    c.client_id
                )));
            }
        }

        let mut objects = HashMap::new();
        let mut fields = HashMap::new();
        let mut prefixes = HashMap::new();
        let mut custom_count = 0;
        for (name, obj) in def.objects.iter_mut() {
            let at = format!("objects.{name}");
            if name.is_empty() || objects.insert(name.to_lowercase(), name.clone()).is_some() {
                return Err(invalid(format!(
                    "{at}: object names must be non-empty and unique ignoring case"
                )));
            }
            let prefix = match &obj.key_prefix {
                Some(p) if p.len() == 3 && p.chars().all(|c| c.is_ascii_alphanumeric()) => {
                    p.clone()
                }
                Some(p) => {
                    return Err(invalid(format!(
                        "{at}.key_prefix: {p:?} is not 3 letters or digits"
                    )))
                }
                None => standard_prefix(name).map(str::to_owned).unwrap_or_else(|| {
                    custom_count += 1;
                    format!("a{:02}", custom_count - 1)
                }),
            };
            prefixes.insert(name.clone(), prefix);
            let field_map = check_fields(&at, obj)?;
            let canon = |f: &str| field_map.get(&f.to_lowercase()).cloned();
            check_rules(&at, obj, &canon)?;
            fields.insert(name.clone(), field_map);
        }
        Ok(CompiledOrg {
            def,
            objects,
            fields,
            prefixes,
        })
    }

    /// (canonical name, definition) of an object, looked up ignoring case.
    pub fn object(&self, name: &str) -> Option<(&str, &ObjectDef)> {
        let canon = self.objects.get(&name.to_lowercase())?;
        Some((canon.as_str(), &self.def.objects[canon]))
    }

    /// (canonical name, definition) of a field of a (canonically named) object.
    pub fn field(&self, object: &str, name: &str) -> Option<(&str, &FieldDef)> {
        let canon = self.fields.get(object)?.get(&name.to_lowercase())?;
        Some((canon.as_str(), &self.def.objects[object].fields[canon]))
    }

    pub fn key_prefix(&self, object: &str) -> &str {
        self.prefixes
            .get(object)
            .map(String::as_str)
            .unwrap_or("a00")
    }

    pub fn client(&self, client_id: &str) -> Option<&OAuthClient> {
        self.def
            .oauth
            .clients
            .iter()
            .find(|c| c.client_id == client_id)
    }

    pub fn today(&self) -> NaiveDate {
        self.def
            .today
            .unwrap_or_else(|| chrono::Utc::now().date_naive())
    }
}

fn standard_prefix(name: &str) -> Option<&'static str> {
    Some(match name {
        "Account" => "001",
        "Contact" => "003",
        "Opportunity" => "006",
        "Lead" => "00Q",
        "Case" => "500",
        "Campaign" => "701",
        "CampaignMember" => "00v",
        "Task" => "00T",
        "Event" => "00U",
        _ => return None,
    })
}

fn check_fields(at: &str, obj: &ObjectDef) -> Result<HashMap<String, String>, SimError> {
    if obj.fields.is_empty() {
        return Err(invalid(format!("{at}.fields: an object needs fields")));
    }
    let mut map = HashMap::new();
    for (name, f) in &obj.fields {
        let at = format!("{at}.fields.{name}");
        if name.is_empty() || map.insert(name.to_lowercase(), name.clone()).is_some() {
            return Err(invalid(format!(
                "{at}: field names must be non-empty and unique ignoring case"
            )));
        }
        if name.eq_ignore_ascii_case("Id") || name.eq_ignore_ascii_case("attributes") {
            return Err(invalid(format!(
                "{at}: {name} is reserved (the simulator assigns record ids)"
            )));
        }
        if f.length.is_some() && !f.kind.is_text() {
            return Err(invalid(format!("{at}: length is only for text types")));
        }
        if f.length == Some(0) {
            return Err(invalid(format!("{at}: length must be positive")));
        }
        if f.kind != FieldType::Picklist && (!f.picklist_values.is_empty() || f.restricted) {
            return Err(invalid(format!(
                "{at}: picklist_values and restricted are only for type picklist"
            )));
        }
        if f.restricted && f.picklist_values.is_empty() {
            return Err(invalid(format!(
                "{at}: a restricted picklist needs picklist_values"
            )));
        }
        let keyable = matches!(
            f.kind,
            FieldType::String | FieldType::Email | FieldType::Number
        );
        if (f.external_id || f.unique) && !keyable {
            return Err(invalid(format!(
                "{at}: external_id and unique need type string, email or number"
            )));
        }
    }
    Ok(map)
}

fn check_rules(
    at: &str,
    obj: &mut ObjectDef,
    canon: &dyn Fn(&str) -> Option<String>,
) -> Result<(), SimError> {
    let canon_field = |at: &str, f: &mut String| -> Result<(), SimError> {
        *f = canon(f).ok_or_else(|| invalid(format!("{at}: unknown field {f:?}")))?;
        Ok(())
    };
    for (i, rule) in obj.validation_rules.iter_mut().enumerate() {
        let at = format!("{at}.validation_rules[{i}] ({})", rule.name);
        if rule.name.is_empty() || rule.message.is_empty() {
            return Err(invalid(format!("{at}: name and message must not be empty")));
        }
        rule.error_condition
            .canonicalize(canon)
            .map_err(|e| invalid(format!("{at}.error_condition: {e}")))?;
        if let Some(f) = &mut rule.error_field {
            canon_field(&format!("{at}.error_field"), f)?;
        }
    }
    for (i, trigger) in obj.triggers.iter_mut().enumerate() {
        let at = format!("{at}.triggers[{i}] ({})", trigger.name);
        if trigger.name.is_empty() || trigger.events.is_empty() {
            return Err(invalid(format!("{at}: name and events must not be empty")));
        }
        if let Some(c) = &mut trigger.when {
            c.canonicalize(canon)
                .map_err(|e| invalid(format!("{at}.when: {e}")))?;
        }
        if let TriggerError::AddError {
            field: Some(f),
            message,
        } = &mut trigger.error
        {
            if message.is_empty() {
                return Err(invalid(format!("{at}.error.message must not be empty")));
            }
            canon_field(&format!("{at}.error.field"), f)?;
        }
    }
    for (i, lock) in obj.lock_contention.iter_mut().enumerate() {
        if let Some(c) = &mut lock.when {
            c.canonicalize(canon)
                .map_err(|e| invalid(format!("{at}.lock_contention[{i}].when: {e}")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn org(objects: serde_json::Value) -> Result<CompiledOrg, SimError> {
        let def: OrgDefinition = serde_json::from_value(json!({ "objects": objects })).unwrap();
        CompiledOrg::compile(def)
    }

    #[test]
    fn lookups_ignore_case_and_rules_get_canonical_names() {
        let c = org(json!({"Contact": {
            "fields": {"Birthdate": {"type": "date"}, "LastName": {"type": "string", "required": true}},
            "validation_rules": [{"name": "r", "error_condition": {"field": "birthdate", "op": "after_today"},
                                  "message": "m", "error_field": "BIRTHDATE"}]
        }}))
        .unwrap();
        assert_eq!(c.object("contact").unwrap().0, "Contact");
        assert_eq!(c.field("Contact", "lastname").unwrap().0, "LastName");
        let rule = &c.def.objects["Contact"].validation_rules[0];
        assert_eq!(rule.error_field.as_deref(), Some("Birthdate"));
        assert_eq!(rule.error_condition.fields(), vec!["Birthdate"]);
        assert_eq!(c.key_prefix("Contact"), "003");
    }

    #[test]
    fn bad_definitions_name_the_place() {
        let e =
            org(json!({"Contact": {"fields": {"A": {"type": "date", "length": 3}}}})).unwrap_err();
        assert!(
            e.to_string()
                .contains("objects.Contact.fields.A: length is only for text types"),
            "{e}"
        );
        let e = org(json!({"Contact": {
            "fields": {"A": {"type": "string"}},
            "validation_rules": [{"name": "r", "error_condition": {"field": "B", "op": "is_blank"}, "message": "m"}]
        }}))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("validation_rules[0] (r).error_condition: unknown field \"B\""),
            "{e}"
        );
        let e =
            org(json!({"Contact": {"fields": {"P": {"type": "picklist", "restricted": true}}}}))
                .unwrap_err();
        assert!(e.to_string().contains("needs picklist_values"), "{e}");
    }
}
