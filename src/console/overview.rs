//! Console pages: an account's overview. Four cards: certificates expiring within 30 days (or
//! expired), refused cut-overs, enabled mappings whose checks fail, and the age of this
//! replica's runtime snapshot. Read-only; every figure comes from the admin API's answers
//! (certificates, mappings, the v2 and v1 checks) or the refresher.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::{html, Markup};
use serde_json::Value;

use super::certificates::display_state;
use super::layout::{badge, page};
use super::mappings::{checked, mapping_url};
use super::{
    account_certificates, account_mappings, certificate_url, days_left, enc, id_text, session_for,
    unix_of, Notice, Refusal,
};
use crate::admin::AdminState;

/// How far ahead "expiring" looks.
const EXPIRING_DAYS: i64 = 30;

pub fn routes() -> axum::Router<AdminState> {
    axum::Router::new()
        .route("/console/a/{account}/", get(overview))
        .route(
            "/console/a/{account}",
            get(|Path(account): Path<String>| async move {
                Redirect::to(&format!("/console/a/{}/", enc(&account)))
            }),
        )
}

fn days_text(days: i64) -> String {
    match days {
        d if d < 0 => format!("expired {} day(s) ago", -d),
        0 => "expires within a day".to_string(),
        1 => "1 day left".to_string(),
        d => format!("{d} days left"),
    }
}

fn card(id: &str, title: &str, count: usize, body: Markup) -> Markup {
    html! {
        section.card id=(id) aria-labelledby={(id) "-heading"} {
            h2 id={(id) "-heading"} { (title) }
            p.figure { (count) }
            @if count == 0 { p.none { "none" } } @else { (body) }
        }
    }
}

async fn overview(
    State(state): State<AdminState>,
    Path(account): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let s = match session_for(&state, &headers, &account) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let refused = |ans: super::Answer| {
        Refusal::Page(
            if ans.status.is_success() {
                axum::http::StatusCode::BAD_GATEWAY
            } else {
                ans.status
            },
            ans.error(),
        )
        .into_response()
    };
    let certs = match account_certificates(&state, &s, &account).await {
        Ok(c) => c,
        Err(ans) => return refused(ans),
    };
    let maps = match account_mappings(&state, &s, &account).await {
        Ok(m) => m,
        Err(ans) => return refused(ans),
    };
    let now = crate::admin::unix_now();

    // Expiring within 30 days, or expired: soonest first.
    let mut expiring: Vec<(i64, &Value)> = certs
        .iter()
        .filter_map(|c| {
            let t = c["expirationDate"].as_str().and_then(unix_of)?;
            (t - now <= EXPIRING_DAYS * 86_400).then_some((t, c))
        })
        .collect();
    expiring.sort_by_key(|(t, _)| *t);

    let cutovers: Vec<(&Value, &Value)> = certs
        .iter()
        .filter_map(|c| {
            let r = &c["lifecycle"]["cutoverRefused"];
            r.is_object().then_some((c, r))
        })
        .collect();

    let enabled: Vec<Value> = maps
        .into_iter()
        .filter(|m| m["enable"] != Value::Bool(false))
        .collect();
    let failing: Vec<_> = checked(&state, &s, &account, enabled)
        .await
        .into_iter()
        .filter(|c| !c.v2.ok || !c.v1.ok)
        .collect();

    let last_success = state.refresher.last_success();
    let built_at = state.refresher.snapshot().load().built_at;
    let age = last_success
        .or(built_at)
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .map(|d| d.as_secs());
    let last_error = state.refresher.last_error();

    let content = html! {
        h1 { "Overview of account " (account) }
        div.cards {
            (card("expiring", "Expiring within 30 days", expiring.len(), html! {
                ul {
                    @for (t, c) in &expiring {
                        @let id = id_text(&c["id"]);
                        li data-certificate-id=(id) {
                            a href=(certificate_url(&account, &id)) { (c["name"].as_str().unwrap_or("")) }
                            " — " span.days { (days_text(days_left(*t, now))) } " "
                            (badge(display_state(c, now)))
                        }
                    }
                }
            }))
            (card("cutovers-refused", "Refused cut-overs", cutovers.len(), html! {
                ul {
                    @for (c, r) in &cutovers {
                        @let id = id_text(&c["id"]);
                        li data-certificate-id=(id) {
                            a href=(certificate_url(&account, &id)) { (c["name"].as_str().unwrap_or("")) }
                            ": serial " span.mono.serial { (r["serial"].as_str().unwrap_or("")) }
                            " refused"
                            @if let Some(at) = r["at"].as_str() { " at " (at) }
                            @if let Some(why) = r["reason"].as_str() { ": " span.reason { (why) } }
                        }
                    }
                }
            }))
            (card("failing-mappings", "Failing mappings", failing.len(), html! {
                ul {
                    @for f in &failing {
                        @let id = id_text(&f.mapping["id"]);
                        @let reason = f.v2.reason.as_deref().or(f.v1.reason.as_deref()).unwrap_or("");
                        li data-mapping-id=(id) {
                            a href=(mapping_url(&account, &id)) { (f.mapping["name"].as_str().unwrap_or("")) }
                            ": " span.reason { (reason) }
                        }
                    }
                }
            }))
            section.card id="snapshot-age" aria-labelledby="snapshot-age-heading" {
                h2 id="snapshot-age-heading" { "Runtime snapshot" }
                @match age {
                    Some(secs) => {
                        p.figure { (secs) " s" }
                        p { "The runtime snapshot was built " (secs) " s ago." }
                    }
                    None => {
                        p.figure { "—" }
                        p { "The runtime snapshot has not been built yet." }
                    }
                }
                @if let Some(e) = &last_error {
                    p.error id="refresh-error" role="alert" { "The last refresh failed: " (e) }
                }
            }
        }
        p.hint { "Expiring: not-after within 30 days, or passed. Failing: enabled mappings whose v2 or v1 check fails. The snapshot is what this replica serves from; it is rebuilt from the store on every change and every refresh.interval_secs." }
    };
    page(
        &state,
        &s,
        Some(&account),
        &format!("Overview of account {account}"),
        Notice::from_query(uri.query()),
        content,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates_and_days() {
        assert_eq!(unix_of("1970-01-02T00:00:00Z"), Some(86_400));
        assert_eq!(unix_of("not a date"), None);
        assert_eq!(days_text(-2), "expired 2 day(s) ago");
        assert_eq!(days_text(0), "expires within a day");
        assert_eq!(days_text(12), "12 days left");
    }
}
