//! The org's API usage as Salesforce reports it.

use crm_export_core::ApiUsage;

/// The header Salesforce sends on every REST response but the versions list.
pub const LIMIT_INFO_HEADER: &str = "Sforce-Limit-Info";

/// Parses `Sforce-Limit-Info` leniently: `api-usage=USED/MAX`, possibly among other
/// `;`- or `,`-separated entries (`per-app-api-usage=17/250(appName=x)`,
/// `api-bursts=1/750`), in any order and case. Anything else is `None`: a header the
/// client cannot read must not fail a call whose records were written.
pub fn parse_limit_info(header: &str) -> Option<ApiUsage> {
    header.split([';', ',']).find_map(|part| {
        let (name, value) = part.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("api-usage") {
            return None;
        }
        let (used, max) = value.trim().split_once('/')?;
        let max = max.trim();
        // Tolerate a trailing annotation such as "(appName=...)" on the total.
        let max_digits: &str = &max[..max.find(|c: char| !c.is_ascii_digit()).unwrap_or(max.len())];
        Some(ApiUsage {
            used: used.trim().parse().ok()?,
            max: max_digits.parse().ok()?,
        })
    })
}

/// Reads `DailyApiRequests` from a `/limits` body (`{"Max": n, "Remaining": n}`).
pub fn parse_limits_body(body: &serde_json::Value) -> Option<ApiUsage> {
    let daily = body.get("DailyApiRequests")?;
    let max = daily.get("Max")?.as_u64()?;
    let remaining = daily.get("Remaining")?.as_u64()?;
    Some(ApiUsage {
        used: max.saturating_sub(remaining),
        max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let u = |used, max| Some(ApiUsage { used, max });
        assert_eq!(parse_limit_info("api-usage=10018/100000"), u(10018, 100000));
        assert_eq!(
            parse_limit_info(
                "api-usage=25/5000; per-app-api-usage=17/250(appName=sample-connected-app)"
            ),
            u(25, 5000)
        );
        assert_eq!(
            parse_limit_info("api-usage=18/5000; api-bursts=1/750"),
            u(18, 5000)
        );
        assert_eq!(
            parse_limit_info("per-app-api-usage=17/250(appName=x); api-usage=3/15000"),
            u(3, 15000)
        );
        assert_eq!(parse_limit_info(" API-Usage = 7 / 15000 "), u(7, 15000));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for bad in [
            "",
            "api-usage",
            "api-usage=",
            "api-usage=12",
            "api-usage=a/b",
            "per-app-api-usage=1/2",
            "garbage",
        ] {
            assert_eq!(parse_limit_info(bad), None, "{bad}");
        }
    }

    #[test]
    fn reads_daily_api_requests_from_limits() {
        let body = serde_json::json!({"DailyApiRequests": {"Max": 15000, "Remaining": 14990},
                                      "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000}});
        assert_eq!(
            parse_limits_body(&body),
            Some(ApiUsage {
                used: 10,
                max: 15000
            })
        );
        assert_eq!(parse_limits_body(&serde_json::json!({})), None);
    }
}
