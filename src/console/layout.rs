//! The page shell: header with the account switcher and the sign-out button, navigation,
//! notices, and the small shared pieces (status badges, dates, the CSRF field).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::Session;
use crate::admin::AdminState;

/// A fixed message shown after a redirect (`?notice=` carries only these names, so a link
/// cannot put text of its own on a page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    Saved,
    Created,
    Deleted,
    Updated,
    Renewing,
    Completed,
    Discarded,
}

impl Notice {
    pub fn name(self) -> &'static str {
        match self {
            Notice::Saved => "saved",
            Notice::Created => "created",
            Notice::Deleted => "deleted",
            Notice::Updated => "updated",
            Notice::Renewing => "renewing",
            Notice::Completed => "completed",
            Notice::Discarded => "discarded",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Notice::Saved => "Saved.",
            Notice::Created => "Created.",
            Notice::Deleted => "Deleted.",
            Notice::Updated => "Updated.",
            Notice::Renewing => {
                "A new version was prepared; it serves once it is signed and completed."
            }
            Notice::Completed => "The signed certificate is in service.",
            Notice::Discarded => "The pending version was dropped.",
        }
    }

    /// The notice named in a query string (`notice=...`), if any.
    pub fn from_query(query: Option<&str>) -> Option<Notice> {
        let q = query?;
        let v = url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "notice")
            .map(|(_, v)| v.into_owned())?;
        [
            Notice::Saved,
            Notice::Created,
            Notice::Deleted,
            Notice::Updated,
            Notice::Renewing,
            Notice::Completed,
            Notice::Discarded,
        ]
        .into_iter()
        .find(|n| n.name() == v)
    }
}

/// A full page for a signed-in session: `account` is the account shown (switcher and navigation),
/// `active` is the navigation entry to mark (`overview`, `certificates`, `mappings`).
pub(crate) fn page(
    state: &AdminState,
    session: &Session,
    account: Option<&str>,
    title: &str,
    notice: Option<Notice>,
    content: Markup,
) -> Response {
    page_with_status(
        state,
        session,
        account,
        title,
        notice,
        StatusCode::OK,
        content,
    )
}

/// [`page`] with a status other than 200 (a form shown again with its error: 400, 409, 422...).
pub(crate) fn page_with_status(
    state: &AdminState,
    session: &Session,
    account: Option<&str>,
    title: &str,
    notice: Option<Notice>,
    status: StatusCode,
    content: Markup,
) -> Response {
    let accounts = session.accounts(state);
    let enc = super::enc;
    let nav = |href: String, label: &str, current: bool| {
        html! {
            li { a href=(href) aria-current=[current.then_some("page")] { (label) } }
        }
    };
    let section = title.to_ascii_lowercase();
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · mtls-gateway console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "mtls-gateway" }
                    form.switcher method="get" action="/console/switch" {
                        label for="account-switch" { "Account" }
                        @if accounts.is_empty() || matches!(session.identity.accounts, crate::auth::AccountScope::All) {
                            input id="account-switch" name="account" list="account-list" value=[account] required;
                            datalist id="account-list" {
                                @for a in &accounts { option value=(a) {} }
                            }
                        } @else {
                            select id="account-switch" name="account" {
                                @for a in &accounts {
                                    option value=(a) selected[Some(a.as_str()) == account] { (a) }
                                }
                            }
                        }
                        button type="submit" { "Go" }
                    }
                    span.who { "Signed in as " strong { (session.identity.subject) } }
                    form.signout method="post" action="/console/logout" {
                        (csrf_field(session))
                        button type="submit" id="sign-out" { "Sign out" }
                    }
                }
                @if let Some(a) = account {
                    nav aria-label="Sections" {
                        ul {
                            (nav(format!("/console/a/{}/", enc(a)), "Overview", section.starts_with("overview")))
                            (nav(format!("/console/a/{}/certificates", enc(a)), "Certificates", section.contains("certificate")))
                            (nav(format!("/console/a/{}/mappings", enc(a)), "Mappings", section.contains("mapping")))
                        }
                    }
                }
                main id="main" {
                    @if let Some(n) = notice {
                        p.notice role="status" id="notice" data-notice=(n.name()) { (n.text()) }
                    }
                    (content)
                }
            }
        }
    };
    (status, axum::response::Html(body.into_string())).into_response()
}

/// A page without the signed-in header (sign-in, refusals).
pub(crate) fn bare(title: &str, content: Markup) -> axum::response::Html<String> {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · mtls-gateway console" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                header.top { span.brand { "mtls-gateway" } }
                main id="main" { (content) }
            }
        }
    };
    axum::response::Html(body.into_string())
}

/// The hidden CSRF field every POST form of the session carries.
pub(crate) fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A status badge: `state` is a machine name (`available`, `expiring`, `expired`,
/// `awaiting_signature`, `renewing`, `cutover_refused`, `unusable`, ...), shown as words, with
/// the name in `data-state` for tests and styles.
pub(crate) fn badge(state: &str) -> Markup {
    let words = match state {
        "available" => "Available",
        "expiring" => "Expiring soon",
        "expired" => "Expired",
        "awaiting_signature" => "Awaiting signature",
        "renewing" => "Renewing",
        "cutover_refused" => "Cut-over refused",
        "not_yet_valid" => "Not yet valid",
        "unusable" => "Unusable",
        "load_failed" => "Load failed",
        "ok" => "OK",
        "enabled" => "Enabled",
        "failing" => "Failing",
        "disabled" => "Disabled",
        other => other,
    };
    let tone = match state {
        "available" | "ok" | "enabled" => "good",
        "expiring" | "awaiting_signature" | "renewing" | "not_yet_valid" | "disabled" => "warn",
        _ => "bad",
    };
    html! { span class={"badge " (tone)} data-state=(state) { (words) } }
}

/// A unix time as `YYYY-MM-DD HH:MM UTC`.
pub(crate) fn date(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// An error box for a form shown again (the API's message, which names the field and the fix).
pub(crate) fn error_box(message: &str) -> Markup {
    html! { div.error role="alert" id="form-error" { (message) } }
}

/// Marks text as already-escaped HTML; only for constant strings.
#[allow(dead_code)]
pub(crate) fn trusted(s: &'static str) -> PreEscaped<&'static str> {
    PreEscaped(s)
}
