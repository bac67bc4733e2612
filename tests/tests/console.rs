//! The web console in a real browser (headless Chromium through ChromeDriver, see
//! `browser_support`): a real `annals serve` server on 127.0.0.1, customers and orders created
//! through the API, and the pages checked as a user sees them. A screenshot of every page is
//! saved under `target/console-screenshots/`.
//!
//! | test | checks |
//! |---|---|
//! | `an_orders_history_state_time_travel_and_the_live_feed` | the overview's tiles count the commands; an order's page shows its state and every event of its history; the version slider shows the state at an earlier version (and the URL names it); the chain of the order's creation shows the saga's steps (created, credit reserved, approved); the aggregate search suggests ids by prefix; the live feed shows an event committed after the page opened, and keeps what arrives while paused |
//! | `the_read_side_retries_a_parked_event_and_rebuilds_a_projection` | the damaged event shows in the log and its history as stored; every subscriber is listed; a parked event (a customer event the views cannot decode) is shown with the event and its error, and Retry sends it through the projection again; Rebuild asks for confirmation and the projection is rebuilt and swapped in |
//! | `the_console_asks_for_a_token_when_the_api_needs_one` | with `auth.tokens` set the page asks for a token, a wrong one is refused and asked for again, the right one loads the overview |

mod browser_support;
// The HTTP tests' shared helpers; this file uses a few of them.
#[allow(dead_code)]
mod http_support;

use std::sync::Arc;
use std::time::Instant;

use annals::envelope::EncodedPayload;
use annals::store::sled::{SledOptions, SledStore};
use annals::store::{AppendKind, AppendRequest, EventStore, PendingEvent};
use annals::{CommitMeta, StreamId, Timestamp, Version};
use serde_json::{json, Value};

use browser_support::Browser;
use http_support::{TestServer, ADMIN_TOKEN};

/// The number of elements `selector` finds.
async fn count(browser: &Browser, selector: &str) -> u64 {
    browser
        .eval(
            "return document.querySelectorAll(arguments[0]).length",
            json!([selector]),
        )
        .await
        .as_u64()
        .unwrap_or(0)
}

/// The text of the first element `selector` finds (empty if none).
async fn text(browser: &Browser, selector: &str) -> String {
    browser
        .eval(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''",
            json!([selector]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[actix_rt::test]
async fn an_orders_history_state_time_travel_and_the_live_feed() {
    let server = TestServer::start(|_| {}).await;
    let api = &server.api;
    let url = server.server().url();
    for id in ["c-1", "c-10", "c-2"] {
        api.create_customer(id, "Ada", 10_000).await;
    }
    api.create_order("o-1", "c-1", 100).await;
    api.order_in("o-1", "Approved").await;
    api.command("orders", "o-1", &json!({"type": "ShipOrder"}))
        .await
        .ok();
    let browser = Browser::start().await;

    // Overview: the tiles fill in from the service's own figures.
    browser.open(&format!("{url}/console#/overview")).await;
    browser.ready().await;
    browser
        .wait_for(
            "the commands tile to show a count",
            "const t = document.querySelector('[data-test=tile-commands]'); \
             return t && /[0-9]/.test(t.innerText)",
            json!([]),
        )
        .await;
    let health = text(&browser, "[data-test=tile-health]").await;
    assert!(health.to_lowercase().contains("ok"), "{health}");
    browser.screenshot("overview").await;

    // An order: its state, its whole history, and its state at version 1.
    browser
        .open(&format!("{url}/console#/aggregates/orders/o-1"))
        .await;
    browser.ready().await;
    browser
        .wait_for(
            "three history rows (created, approved, shipped)",
            "return document.querySelectorAll('[data-test=history-row]').length === 3",
            json!([]),
        )
        .await;
    let state = text(&browser, "[data-test=aggregate-state]").await;
    assert!(state.contains("Shipped"), "the state now: {state}");
    let versions = browser
        .eval(
            "return [...document.querySelectorAll('[data-test=history-row]')] \
             .map(r => Number(r.dataset.version))",
            json!([]),
        )
        .await;
    assert_eq!(versions, json!([1, 2, 3]));
    browser.screenshot("aggregate").await;
    // Time travel: the slider to version 1 shows the order as it was created.
    browser
        .eval(
            "const s = document.querySelector('[data-test=version-slider]'); s.value = '1'; \
             s.dispatchEvent(new Event('input', {bubbles: true})); \
             s.dispatchEvent(new Event('change', {bubbles: true}))",
            json!([]),
        )
        .await;
    browser
        .wait_for(
            "the state at version 1",
            "const t = document.querySelector('[data-test=aggregate-state]'); \
             return t && t.innerText.includes('Pending') && location.hash.includes('version=1')",
            json!([]),
        )
        .await;
    browser.screenshot("aggregate-version-1").await;

    // The chain of the order's first event: the saga's steps, in order.
    browser
        .click("[data-test=history-row][data-version=\"1\"] [data-test=chain-link]")
        .await;
    let steps = browser
        .wait_for(
            "the chain of the order's creation",
            "const s = [...document.querySelectorAll('[data-test=chain-event]')] \
             .map(e => e.dataset.eventType); return s.length >= 3 ? s : null",
            json!([]),
        )
        .await;
    assert_eq!(
        steps,
        json!(["OrderCreated", "CreditReserved", "OrderApproved"]),
        "the saga's steps from the order's creation"
    );
    // The saga's decision deadline was cancelled when the order was approved.
    browser.find("[data-test=no-deadlines]").await;
    browser.screenshot("chain").await;

    // The search suggests ids by prefix.
    browser
        .eval(
            "const t = document.querySelector('[data-test=aggregate-type]'); t.value = 'customers'; \
             t.dispatchEvent(new Event('change', {bubbles: true}))",
            json!([]),
        )
        .await;
    browser
        .type_into("[data-test=aggregate-search]", "c-1")
        .await;
    let suggested = browser
        .wait_for(
            "suggestions for c-1",
            "const s = [...document.querySelectorAll('[data-test=suggestion]')] \
             .map(e => e.innerText.trim()); return s.length ? s : null",
            json!([]),
        )
        .await;
    assert_eq!(suggested, json!(["c-1", "c-10"]));

    // The live feed: an event committed after the page opened appears.
    browser.open(&format!("{url}/console#/live")).await;
    browser.ready().await;
    browser
        .wait_for(
            "the feed to be connected",
            "const s = document.querySelector('[data-test=live-status]'); \
             return s && /live|connected/i.test(s.innerText)",
            json!([]),
        )
        .await;
    let created = api.create_order("o-2", "c-2", 50).await;
    let sent = Instant::now();
    let position = created["position"]
        .as_u64()
        .expect("the command's position");
    browser
        .wait_for(
            "the new order's event in the live feed",
            "return document.querySelector(`[data-test=live-row][data-position=\"${arguments[0]}\"]`) !== null",
            json!([position]),
        )
        .await;
    // Reported, not asserted (a shared machine's pauses would make a bound flaky); the issue
    // asks for under a second.
    println!(
        "live feed: the event at {position} showed {:?} after its reply",
        sent.elapsed()
    );
    // Paused, the feed keeps what arrives; resumed, it shows it.
    browser.click("[data-test=live-pause]").await;
    let created = api.create_order("o-3", "c-2", 50).await;
    let paused_position = created["position"].as_u64().expect("a position");
    let selector = format!("[data-test=live-row][data-position=\"{paused_position}\"]");
    actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        count(&browser, &selector).await,
        0,
        "nothing is shown while paused"
    );
    browser.click("[data-test=live-pause]").await;
    browser
        .wait_for(
            "the event that arrived while paused",
            "return document.querySelector(arguments[0]) !== null",
            json!([selector]),
        )
        .await;
    browser.screenshot("live").await;
    browser.close().await;
    server.stop().await;
}

/// A customer event whose payload is not CBOR: the views cannot decode it and park it.
fn write_an_undecodable_customer_event(dir: &std::path::Path) {
    let store = SledStore::open(SledOptions::new(dir)).expect("the store opens");
    let stream = StreamId::new("Customer", "c-broken").expect("a valid stream id");
    let request = AppendRequest {
        stream,
        expected: Version(0),
        meta: CommitMeta {
            recorded_at: Timestamp::now(),
            ..CommitMeta::default()
        },
        command: None,
        kind: AppendKind::Events(vec![PendingEvent {
            event_id: uuid::Uuid::new_v4(),
            event_type: Arc::from("CustomerCreated"),
            schema_version: 1,
            payload: EncodedPayload(vec![0xff, 0x00, 0x13]),
        }]),
    };
    futures::executor::block_on(store.append(request)).expect("the append is acknowledged");
    store.shutdown().expect("the store shuts down");
}

#[actix_rt::test]
async fn the_read_side_retries_a_parked_event_and_rebuilds_a_projection() {
    let dir = tempfile::tempdir().expect("a temporary data directory");
    write_an_undecodable_customer_event(dir.path());
    let server = TestServer::start_in(dir, |config| {
        // An admin token: rebuilds and retries need the `admin` scope.
        config.auth.tokens = vec![annals_config::Token::new(ADMIN_TOKEN)];
    })
    .await;
    let api = server.api.with_token(ADMIN_TOKEN);
    api.create_customer("c-1", "Ada", 10_000).await;
    let parked = "/v1/projections/customer-summaries/parked";
    let deadline = Instant::now() + browser_support::PAGE_WAIT;
    while api.get(parked).await.ok()["parked"] == json!([]) {
        assert!(
            Instant::now() < deadline,
            "the broken event was never parked"
        );
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The damaged event does not hide the log or the history around it: shown as stored.
    let log = api.get("/v1/events?after=0&limit=2").await.ok();
    assert_eq!(
        log["events"][0]["data"],
        json!({"$bytes": "ff0013"}),
        "{log}"
    );
    assert_eq!(log["events"][1]["aggregate"], "Customer", "{log}");
    let history = api.get("/v1/customers/c-broken/events").await.ok();
    assert_eq!(history["events"][0]["type"], "CustomerCreated", "{history}");
    let url = server.server().url();
    let browser = Browser::start().await;
    browser.open(&format!("{url}/console#/read-side")).await;
    sign_in(&browser, ADMIN_TOKEN).await;
    browser.ready().await;
    browser
        .wait_for(
            "the four subscribers",
            "const names = [...document.querySelectorAll('[data-test=subscriber-row]')] \
             .map(r => r.dataset.name).sort().join(','); \
             return names === 'causation,customer-summaries,order-credit,valuable-customers'",
            json!([]),
        )
        .await;
    browser.screenshot("read-side").await;

    // The parked event, with its error, and Retry.
    browser
        .open(&format!("{url}/console#/read-side/customer-summaries"))
        .await;
    browser.ready().await;
    let row = "[data-test=parked-row][data-position=\"1\"]";
    browser.find(row).await;
    let shown = text(&browser, row).await;
    assert!(
        shown.contains("cannot decode") && shown.contains("CustomerCreated"),
        "the parked row shows the event and the error: {shown}"
    );
    assert!(!shown.contains("internal error"), "{shown}");
    browser.screenshot("parked").await;
    browser.click(&format!("{row} [data-test=retry]")).await;
    browser
        .wait_for(
            "the retry to be answered",
            "return document.querySelector(arguments[0]) === null \
             && /position 1/.test(document.body.innerText)",
            json!([row]),
        )
        .await;
    // A projection's retry rebuilds it; the event is still undecodable, so the rebuilt
    // projection parks it again: the retry went all the way through.
    let deadline = Instant::now() + browser_support::PAGE_WAIT;
    loop {
        let subscribers = api.get("/v1/projections").await.ok();
        let rebuilding = subscribers["subscribers"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "customer-summaries#rebuild"));
        if !rebuilding
            && api.get(parked).await.ok()["parked"]
                .as_array()
                .is_some_and(|p| p.len() == 1)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the retried projection did not settle"
        );
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Rebuild, confirmed, and swapped in.
    browser.open(&format!("{url}/console#/read-side")).await;
    browser.ready().await;
    browser
        .click("[data-test=subscriber-row][data-name=\"valuable-customers\"] [data-test=rebuild]")
        .await;
    browser.click("[data-test=confirm-yes]").await;
    browser
        .wait_for(
            "the rebuild to be swapped in",
            "return /valuable-customers was rebuilt and swapped in/.test(document.body.innerText)",
            json!([]),
        )
        .await;
    browser.screenshot("rebuilt").await;
    let view = api.get("/v1/views/customers/c-1").await.ok();
    assert_eq!(view["name"], "Ada", "{view}");
    browser.close().await;
    server.stop().await;
}

/// Waits until the page asks for a token (`what` says why it should).
async fn asked_for_a_token(browser: &Browser, what: &str) {
    browser
        .wait_for(
            what,
            "const d = document.querySelector('[data-test=token-dialog]'); return d && d.open",
            json!([]),
        )
        .await;
}

/// Answers the token dialog with `token`.
async fn sign_in(browser: &Browser, token: &str) {
    asked_for_a_token(browser, "the token dialog").await;
    browser
        .eval(
            "document.querySelector('[data-test=token-input]').value = ''",
            json!([]),
        )
        .await;
    browser.type_into("[data-test=token-input]", token).await;
    browser.click("[data-test=token-submit]").await;
}

#[actix_rt::test]
async fn the_console_asks_for_a_token_when_the_api_needs_one() {
    let server = TestServer::start(|config| {
        config.auth.tokens = vec![annals_config::Token::new(ADMIN_TOKEN)];
    })
    .await;
    let url = server.server().url();
    let browser = Browser::start().await;
    browser.open(&format!("{url}/console#/overview")).await;
    asked_for_a_token(&browser, "the token dialog").await;
    browser.screenshot("sign-in").await;
    sign_in(&browser, "not-the-token-0123456789").await;
    // Refused: asked again.
    asked_for_a_token(&browser, "the token dialog again after a wrong token").await;
    sign_in(&browser, ADMIN_TOKEN).await;
    browser
        .wait_for(
            "the overview with the right token",
            "const t = document.querySelector('[data-test=tile-commands]'); \
             const d = document.querySelector('[data-test=token-dialog]'); \
             return t !== null && !(d && d.open)",
            json!([]),
        )
        .await;
    let stored: Value = browser
        .eval("return sessionStorage.length > 0", json!([]))
        .await;
    assert_eq!(stored, json!(true), "the token is kept for the tab");
    browser.close().await;
    server.stop().await;
}
