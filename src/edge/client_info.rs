//! What the edge tells the hub about the client that published a page event: the browser
//! and operating system its User-Agent names, and the country and city the trusted proxy
//! or CDN put in the headers the configuration names (`--geo-country-header`,
//! `--geo-city-header`). Never the client's address.
//!
//! It is found once per request or WebSocket connection (from the upgrade request) and
//! put into each page event as its `client` before the event is submitted, so it is in
//! the logged input: the fold, a replay and every cluster node build the profile from
//! the event alone. A client may not set `client` itself.

use axum::http::HeaderMap;

use crate::config::Config;
use crate::error::HubError;
use crate::ingest::event::{ClientContext, Event, Software, VisitorKind, MAX_CLIENT_TEXT_CHARS};

/// What the edge found about one request's or connection's client.
pub fn from_headers(config: &Config, headers: &HeaderMap) -> ClientContext {
    let header = |name: &str| {
        (!name.is_empty())
            .then(|| headers.get(name)?.to_str().ok())
            .flatten()
            .and_then(short)
    };
    let (browser, os) = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map_or((None, None), parse_user_agent);
    ClientContext {
        browser,
        os,
        country: header(&config.geo_country_header),
        city: header(&config.geo_city_header),
    }
}

/// Puts `client` into a page event (an empty one leaves the event as it was); refuses an
/// event that carries a `client` of its own, since only the hub may say what it is.
pub fn stamp(event: &mut Event, client: &ClientContext) -> Result<(), HubError> {
    let Event::Visitor(e) = event else {
        return Ok(());
    };
    if e.client.is_some() {
        return Err(HubError::invalid_field(
            "client",
            "`client` is set by the hub from the request's User-Agent and the configured \
             geo headers; a publisher may not send it",
        ));
    }
    if e.kind == VisitorKind::Page && !client.is_empty() {
        e.client = Some(Box::new(client.clone()));
    }
    Ok(())
}

/// The categories of User-Agent that are a person's browser: crawlers and HTTP libraries
/// (a site's server publishing for its visitors) say nothing of the visitor.
const BROWSER_CATEGORIES: [&str; 4] = ["pc", "smartphone", "mobilephone", "appliance"];

/// The browser and operating system a User-Agent names, as woothee reads it (its
/// "UNKNOWN" is no answer).
fn parse_user_agent(agent: &str) -> (Option<Software>, Option<Software>) {
    let found = woothee::parser::Parser::new().parse(agent);
    let Some(found) = found.filter(|f| BROWSER_CATEGORIES.contains(&f.category)) else {
        return (None, None);
    };
    let software = |name: &str, version: &str| {
        short(name).map(|name| Software {
            name,
            version: short(version),
        })
    };
    (
        software(found.name, found.version),
        software(found.os, &found.os_version),
    )
}

/// A header's or parser's text as `client` keeps it: none when empty or unknown, cut to
/// the field's limit.
fn short(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty() && text != woothee::woothee::VALUE_UNKNOWN)
        .then(|| text.chars().take(MAX_CLIENT_TEXT_CHARS).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_agent_names_its_browser_and_system() {
        let chrome = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 \
                      (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        let (browser, os) = parse_user_agent(chrome);
        assert_eq!(
            browser,
            Some(Software {
                name: "Chrome".into(),
                version: Some("120.0.0.0".into())
            })
        );
        assert_eq!(os.map(|os| os.name), Some("Mac OSX".into()));
        assert_eq!(parse_user_agent("curl/8.0"), (None, None));
        assert_eq!(parse_user_agent(""), (None, None));
    }
}
