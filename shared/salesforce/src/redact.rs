//! Salesforce puts the offending value into some error messages ("invalid email address:
//! jane@…", "data value too large: …"). Those messages are stored with ExportErrors items,
//! shown by the API and the CLI and published in events, where record values must not
//! appear unless asked for: the value is cut out here, before anything keeps the message.

/// (text before the value, text after it or `None` for "to the end").
const VALUE_SPOTS: &[(&str, Option<&str>)] = &[
    ("data value too large: ", Some(" (max length=")),
    ("invalid email address: ", None),
    ("bad value for restricted picklist field: ", None),
    ("Duplicate external id specified: ", None),
    ("from VALUE_STRING value ", Some(" or request")),
    ("Foreign key external ID: ", Some(" not found")),
    ("invalid cross reference id: ", None),
];

const REDACTED: &str = "<redacted>";

/// The message with every known value spot replaced by `<redacted>`.
pub fn redact_values(message: &str) -> String {
    let mut out = message.to_string();
    for (before, after) in VALUE_SPOTS {
        let mut from = 0;
        while let Some(pos) = out[from..].find(before) {
            let start = from + pos + before.len();
            // A value ends at its terminator, at an appended "[also …]" error, or at the end.
            let rest = &out[start..];
            let end = after
                .and_then(|a| rest.find(a))
                .or_else(|| rest.find(" [also "))
                .unwrap_or(rest.len());
            out.replace_range(start..start + end, REDACTED);
            from = start + REDACTED.len();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_values;

    #[test]
    fn values_are_cut_out_of_salesforce_messages() {
        let cases = [
            (
                "First Name: data value too large: JaneSecretName (max length=40)",
                "First Name: data value too large: <redacted> (max length=40)",
            ),
            ("Email: invalid email address: jane.private", "Email: invalid email address: <redacted>"),
            ("bad value for restricted picklist field: Secret", "bad value for restricted picklist field: <redacted>"),
            ("Duplicate external id specified: 10001", "Duplicate external id specified: <redacted>"),
            (
                "Cannot deserialize instance of date from VALUE_STRING value 1990-13-45 or request may be missing a required field at [line:1, column:9]",
                "Cannot deserialize instance of date from VALUE_STRING value <redacted> or request may be missing a required field at [line:1, column:9]",
            ),
            (
                "Email: invalid email address: a@b [also REQUIRED_FIELD_MISSING: Required fields are missing: [LastName]]",
                "Email: invalid email address: <redacted> [also REQUIRED_FIELD_MISSING: Required fields are missing: [LastName]]",
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(redact_values(raw), want);
        }
    }

    #[test]
    fn messages_without_values_are_kept() {
        for m in [
            "Birthdate cannot be in the future",
            "Required fields are missing: [LastName]",
            "",
        ] {
            assert_eq!(redact_values(m), m);
        }
    }
}
