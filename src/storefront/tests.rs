//! The storefront payloads end to end, without I/O but the fixtures: given these
//! deliveries (the files under `fixtures/shopify/` and `fixtures/woocommerce/`), when the
//! plan's steps run against an Order through its own `decide` and `evolve`, then our order
//! shows this, and the next delivery changes only what it should.

use std::path::PathBuf;

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::domain::order::{
    Order, OrderCommand, OrderStatus, PaymentStatus, PlacedOrder, ShipmentStatus,
};
use crate::domain::values::{Currency, SourceName};

fn fixture(platform: Platform, name: &str) -> Vec<u8> {
    let path = fixtures_dir(platform).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixtures_dir(platform: Platform) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(platform.as_str())
}

/// Each fixture's topic, from the folder's `topics.json` (`null` for the Woo ping).
fn topics(platform: Platform) -> Vec<(String, Option<String>)> {
    let raw = std::fs::read(fixtures_dir(platform).join("topics.json")).unwrap();
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&raw).unwrap();
    map.into_iter()
        .map(|(file, topic)| (file, topic.as_str().map(str::to_owned)))
        .collect()
}

fn topic_of(platform: Platform, name: &str) -> String {
    topics(platform)
        .into_iter()
        .find(|(file, _)| file == name)
        .and_then(|(_, topic)| topic)
        .unwrap_or_else(|| panic!("{name} has no topic in topics.json"))
}

fn delivery(platform: Platform, name: &str) -> Delivery {
    let topic = topic_of(platform, name);
    parse(platform, &topic, &fixture(platform, name))
        .unwrap_or_else(|e| panic!("{name} ({topic}): {e}"))
}

fn snapshot(platform: Platform, name: &str) -> Snapshot {
    match delivery(platform, name) {
        Delivery::Order(snapshot) => snapshot,
        other => panic!("{name} is no order snapshot: {other:?}"),
    }
}

fn shopify(name: &str) -> Delivery {
    delivery(Platform::Shopify, name)
}

fn woo(name: &str) -> Delivery {
    delivery(Platform::WooCommerce, name)
}

fn source() -> SourceName {
    SourceName::parse("myshop").unwrap()
}

fn received() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
}

fn utc(raw: &str) -> DateTime<Utc> {
    raw.parse().unwrap()
}

fn usd(amount: i64) -> Money {
    Money::parse(amount, Currency::parse("USD").unwrap()).unwrap()
}

/// `body` with `from` replaced by `to`; `from` must be there, or the test proves nothing.
fn edit(body: &str, from: &str, to: &str) -> String {
    assert!(body.contains(from), "the fixture no longer holds {from}");
    body.replacen(from, to, 1)
}

fn kind(step: &Step) -> &'static str {
    match step {
        Step::Place(_) => "place",
        Step::Apply(command) => match command {
            OrderCommand::PlaceOrder(_) => "place",
            OrderCommand::AttemptPayment(_) => "attempt",
            OrderCommand::CapturePayment(_) => "capture",
            OrderCommand::FailPayment(_) => "fail",
            OrderCommand::DispatchShipment(_) => "dispatch",
            OrderCommand::DeliverShipment(_) => "deliver",
            OrderCommand::CancelOrder(_) => "cancel",
            OrderCommand::RefundOrder(_) => "refund",
            OrderCommand::ExpireOrder(_) => "expire",
        },
    }
}

/// Runs the plan against `order` as the applier does (at most 32 steps), and names the
/// steps it took. Every step must be accepted by the aggregate.
fn apply(order: &mut Order, delivery: &Delivery) -> Vec<&'static str> {
    let mut taken = Vec::new();
    for _ in 0..32 {
        let step = next_step(&source(), delivery, order.placed(), received())
            .unwrap_or_else(|e| panic!("planning failed after {taken:?}: {e}"));
        let Some(step) = step else {
            return taken;
        };
        taken.push(kind(&step));
        let command = match step {
            Step::Place(place) => OrderCommand::PlaceOrder(place),
            Step::Apply(command) => command,
        };
        let events = order
            .decide(command.clone())
            .unwrap_or_else(|e| panic!("the order refused {command:?} after {taken:?}: {e}"));
        for event in events {
            order.evolve(event);
        }
    }
    panic!("the plan did not settle in 32 steps: {taken:?}");
}

fn placed(order: &Order) -> &PlacedOrder {
    order.placed().expect("the order exists")
}

// --- Every fixture --------------------------------------------------------------------------

#[test]
fn every_fixture_parses_under_the_topic_its_name_and_topics_json_give() {
    for platform in [Platform::Shopify, Platform::WooCommerce] {
        let listed = topics(platform);
        let mut on_disk: Vec<String> = std::fs::read_dir(fixtures_dir(platform))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name != "topics.json" && name != "README.md")
            .collect();
        on_disk.sort();
        let mut names: Vec<String> = listed.iter().map(|(f, _)| f.clone()).collect();
        names.sort();
        assert_eq!(
            names, on_disk,
            "topics.json lists every {platform:?} fixture"
        );
        for (file, topic) in listed {
            let body = fixture(platform, &file);
            // The naming convention: the topic, its first separator written as `-`, then
            // `.variant` and the extension.
            if let Some(topic) = &topic {
                let separator = if platform == Platform::Shopify {
                    "/"
                } else {
                    "."
                };
                let named = file.split('.').next().unwrap().replacen('-', separator, 1);
                assert_eq!(&named, topic, "{file}");
            }
            let parsed = parse(platform, topic.as_deref().unwrap_or(""), &body);
            assert!(parsed.is_ok(), "{file}: {parsed:?}");
        }
    }
}

#[test]
fn shopify_bodies_are_kept_as_shopify_sends_them_with_escaped_slashes() {
    let body = fixture(Platform::Shopify, "orders-create.escaped.json");
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains(r"https:\/\/northwind.example\/gift-notes\/1047?from=ada\u0026to=sam"));
    assert!(!text.ends_with('\n'));
    let snapshot = snapshot(Platform::Shopify, "orders-create.escaped.json");
    assert_eq!(snapshot.external_id, "5712036428813431877");
}

// --- Shopify ----------------------------------------------------------------------------------

#[test]
fn a_shopify_order_id_above_2_pow_53_survives_exactly() {
    let snapshot = snapshot(Platform::Shopify, "orders-create.json");
    // Through a double, as many JSON parsers read it, the id is another order's.
    let raw: serde_json::Value =
        serde_json::from_slice(&fixture(Platform::Shopify, "orders-create.json")).unwrap();
    let through_f64 = raw["id"].as_f64().unwrap() as u64;
    assert_ne!(through_f64.to_string(), "5712036428813373457");
    assert_eq!(snapshot.external_id, "5712036428813373457");
    let place = match next_step(&source(), &Delivery::Order(snapshot), None, received()) {
        Ok(Some(Step::Place(place))) => place,
        other => panic!("{other:?}"),
    };
    assert_eq!(place.order_id.as_str(), "myshop-5712036428813373457");
    let origin = place.origin.unwrap();
    assert_eq!(origin.external_id.as_str(), "5712036428813373457");
    assert_eq!(origin.external_number.unwrap().as_str(), "#1042");
}

#[test]
fn a_shopify_order_reads_its_lines_discounts_shipping_and_taxes_in_cents() {
    let s = snapshot(Platform::Shopify, "orders-create.json");
    assert_eq!(s.platform, Platform::Shopify);
    assert_eq!(s.customer_id.as_str(), "7741203398721");
    assert_eq!(s.created_at, utc("2026-11-21T12:05:07Z"));
    let lines: Vec<_> = s
        .lines
        .iter()
        .map(|l| (l.sku.as_deref(), l.quantity.get(), l.unit_price.amount()))
        .collect();
    assert_eq!(
        lines,
        [(Some("MUG-BLUE"), 2, 1500), (Some("TEE.RED.M"), 1, 2500)]
    );
    assert_eq!(s.lines[0].discounts[0].title.as_str(), "SUMMER10");
    assert_eq!(s.lines[0].discounts[0].amount, usd(300));
    assert_eq!(s.lines[1].discounts[0].amount, usd(250));
    // The shipping discount is on the order as a whole.
    assert_eq!(s.discounts.len(), 1);
    assert_eq!(s.discounts[0].title.as_str(), "Loyal customer shipping");
    assert_eq!(s.discounts[0].amount, usd(200));
    assert_eq!(s.shipping_lines[0].amount, usd(700));
    let taxes: Vec<i64> = s.tax_lines.iter().map(|t| t.amount.amount()).collect();
    assert_eq!(taxes, [198, 223]);
    assert!(!s.taxes_included);
    assert_eq!(s.total, usd(5871));
    assert_eq!(s.payment, SnapshotPayment::None);
}

#[test]
fn a_jpy_order_has_no_minor_unit_and_reads_a_json_number_exactly() {
    let s = snapshot(Platform::Shopify, "orders-create.jpy.json");
    assert_eq!(s.currency.code(), "JPY");
    assert_eq!(s.lines[0].unit_price.amount(), 1200);
    // `tax_lines[0].price` is the JSON number 410.
    assert_eq!(s.tax_lines[0].amount.amount(), 410);
    assert_eq!(s.total.amount(), 4510);
}

#[test]
fn a_kwd_order_keeps_three_decimals() {
    let s = snapshot(Platform::Shopify, "orders-create.kwd.json");
    assert_eq!(s.currency.code(), "KWD");
    let prices: Vec<i64> = s.lines.iter().map(|l| l.unit_price.amount()).collect();
    assert_eq!(prices, [12350, 3125]);
    assert_eq!(s.lines[1].discounts[0].amount.amount(), 625);
    assert_eq!(s.total.amount(), 19475);
    assert_eq!(s.payment, SnapshotPayment::Authorized);
}

#[test]
fn a_line_without_a_sku_is_placed_untracked_under_a_sku_made_from_its_line_id() {
    let mut order = Order::default();
    let steps = apply(&mut order, &shopify("orders-create.custom-line.json"));
    assert_eq!(steps, ["place", "attempt", "capture"]);
    let order = placed(&order);
    let lines: Vec<_> = order
        .lines
        .iter()
        .map(|l| (l.sku.as_str(), l.untracked))
        .collect();
    assert_eq!(
        lines,
        [
            ("MUG-BLUE", false),
            ("item-14512007630002", true),
            ("item-14512007630003", true)
        ]
    );
    // Taxes included in the prices are not added again.
    assert!(order.tax_lines.is_empty());
    assert_eq!(order.total.amount(), 2400);
    assert_eq!(order.status(), OrderStatus::Paid);
}

#[test]
fn topics_that_move_no_order_are_ignored() {
    assert!(matches!(
        shopify("inventory_levels-update.json"),
        Delivery::Ignored { .. }
    ));
    assert!(matches!(
        parse(Platform::Shopify, "products/update", b"{}"),
        Ok(Delivery::Ignored { .. })
    ));
}

#[test]
fn a_shopify_order_through_payment_fulfilments_and_refunds_ends_refunded_and_delivered() {
    let mut order = Order::default();
    let mut steps = Vec::new();
    for (name, expected) in [
        ("orders-create.json", vec!["place"]),
        ("orders-paid.json", vec!["attempt", "capture"]),
        ("orders-partially_fulfilled.json", vec!["dispatch"]),
        ("orders-fulfilled.json", vec!["deliver", "dispatch"]),
        ("refunds-create.partial.json", vec!["refund"]),
        ("refunds-create.full.json", vec!["refund"]),
        ("orders-updated.refunded.json", vec!["deliver"]),
    ] {
        let taken = apply(&mut order, &shopify(name));
        assert_eq!(taken, expected, "{name}");
        steps.extend(taken);
    }
    let o = placed(&order);
    assert_eq!(o.status(), OrderStatus::Refunded);
    assert_eq!(o.payments.len(), 1);
    assert_eq!(o.payments[0].payment_id.as_str(), "pay-5712036428813373457");
    assert_eq!(o.payments[0].status, PaymentStatus::Captured);
    assert_eq!(o.captured, usd(5871));
    let shipments: Vec<_> = o
        .shipments
        .iter()
        .map(|s| (s.shipment_id.as_str(), s.status, s.carrier.as_str()))
        .collect();
    assert_eq!(
        shipments,
        [
            ("f5120334411", ShipmentStatus::Delivered, "UPS"),
            ("f5120334412", ShipmentStatus::Delivered, "UPS")
        ]
    );
    assert_eq!(o.shipments[0].lines[0].sku.as_str(), "MUG-BLUE");
    assert_eq!(
        o.shipments[0].delivered_at,
        Some(utc("2026-11-24T19:31:00Z"))
    );
    assert!(o.fulfilled_at.is_some());
    let refunds: Vec<_> = o
        .refunds
        .iter()
        .map(|r| (r.refund_id.as_str(), r.amount.amount(), r.reason.as_str()))
        .collect();
    assert_eq!(
        refunds,
        [
            ("r931000221", 1000, "Mug arrived chipped"),
            ("r931000222", 4871, "refunded on the storefront")
        ]
    );
    assert_eq!(o.refunded, usd(5871));
    assert_eq!(o.placed_at, utc("2026-11-21T12:05:07Z"));
}

#[test]
fn every_shopify_delivery_again_after_the_last_changes_nothing() {
    let mut order = Order::default();
    apply(&mut order, &shopify("orders-updated.refunded.json"));
    let before = order.clone();
    for (name, _) in topics(Platform::Shopify) {
        let delivery = shopify(&name);
        let for_this_order = match &delivery {
            Delivery::Order(s) => s.external_id == "5712036428813373457",
            _ => true,
        };
        if for_this_order {
            let step = next_step(&source(), &delivery, order.placed(), received()).unwrap();
            assert_eq!(step, None, "{name}");
        }
    }
    assert_eq!(order, before);
}

#[test]
fn the_newest_snapshot_alone_brings_a_missing_order_all_the_way() {
    let mut order = Order::default();
    let steps = apply(&mut order, &shopify("orders-updated.refunded.json"));
    assert_eq!(
        steps,
        [
            "place", "attempt", "capture", "dispatch", "deliver", "dispatch", "deliver", "refund",
            "refund"
        ]
    );
    assert_eq!(placed(&order).status(), OrderStatus::Refunded);
    assert!(placed(&order).fulfilled_at.is_some());
}

#[test]
fn the_same_snapshot_twice_changes_nothing_the_second_time() {
    let mut order = Order::default();
    let delivery = shopify("orders-fulfilled.json");
    assert!(!apply(&mut order, &delivery).is_empty());
    assert_eq!(apply(&mut order, &delivery), Vec::<&str>::new());
}

#[test]
fn an_older_snapshot_after_a_newer_one_changes_nothing() {
    let mut order = Order::default();
    apply(&mut order, &shopify("orders-fulfilled.json"));
    for older in [
        "orders-create.json",
        "orders-paid.json",
        "orders-partially_fulfilled.json",
    ] {
        assert_eq!(
            apply(&mut order, &shopify(older)),
            Vec::<&str>::new(),
            "{older}"
        );
    }
}

#[test]
fn paid_before_create_creates_and_pays_and_the_late_create_is_a_no_op() {
    let mut order = Order::default();
    assert_eq!(
        apply(&mut order, &shopify("orders-paid.json")),
        ["place", "attempt", "capture"]
    );
    assert_eq!(placed(&order).status(), OrderStatus::Paid);
    assert_eq!(
        apply(&mut order, &shopify("orders-create.json")),
        Vec::<&str>::new()
    );
}

#[test]
fn a_voided_and_cancelled_order_records_the_failed_authorisation_and_the_cancellation() {
    let mut order = Order::default();
    let steps = apply(&mut order, &shopify("orders-cancelled.json"));
    assert_eq!(steps, ["place", "attempt", "fail", "cancel"]);
    let o = placed(&order);
    // A guest checkout: a guest of this one order, so one guest's erasure is not all.
    assert_eq!(o.customer_id.as_str(), "guest-myshop-5712036428813389021");
    assert_eq!(o.status(), OrderStatus::Cancelled);
    let cancellation = o.cancellation.as_ref().unwrap();
    assert_eq!(cancellation.reason.as_str(), "customer");
    assert_eq!(cancellation.cancelled_at, utc("2026-11-21T13:15:00Z"));
}

#[test]
fn a_refund_or_fulfilment_of_an_order_not_in_the_log_is_still_proposed() {
    let refund = next_step(
        &source(),
        &shopify("refunds-create.partial.json"),
        None,
        received(),
    );
    let Ok(Some(Step::Apply(OrderCommand::RefundOrder(refund)))) = refund else {
        panic!("{refund:?}")
    };
    assert_eq!(refund.refund_id.as_str(), "r931000221");
    assert_eq!(refund.amount.get(), 1000);
    let Delivery::Refund { external_id, .. } = shopify("refunds-create.partial.json") else {
        unreachable!()
    };
    assert_eq!(external_id, "5712036428813373457");
    let step = next_step(
        &source(),
        &shopify("fulfillments-create.json"),
        None,
        received(),
    );
    let Ok(Some(Step::Apply(OrderCommand::DispatchShipment(dispatch)))) = step else {
        panic!("{step:?}")
    };
    assert_eq!(dispatch.shipment_id.as_str(), "f5120334412");
    assert_eq!(dispatch.tracking_number.as_str(), "1Z999AA10123456791");
    let lines: Vec<_> = dispatch
        .lines
        .unwrap()
        .into_iter()
        .map(|(sku, q)| (sku.as_str().to_owned(), q.get()))
        .collect();
    assert_eq!(lines, [("TEE.RED.M".to_owned(), 1)]);
}

#[test]
fn a_fulfilment_delivery_ships_its_lines_of_a_paid_order_once() {
    let mut order = Order::default();
    apply(&mut order, &shopify("orders-partially_fulfilled.json"));
    assert_eq!(
        apply(&mut order, &shopify("fulfillments-create.json")),
        ["dispatch"]
    );
    assert_eq!(placed(&order).status(), OrderStatus::Shipped);
    assert_eq!(
        apply(&mut order, &shopify("fulfillments-create.json")),
        Vec::<&str>::new()
    );
}

#[test]
fn a_cancelled_order_takes_no_payment_from_an_older_snapshot() {
    let mut order = Order::default();
    apply(&mut order, &shopify("orders-cancelled.json"));
    let body = fixture(Platform::Shopify, "orders-cancelled.json");
    let body = String::from_utf8(body).unwrap();
    let paid = edit(
        &body,
        r#""financial_status":"voided""#,
        r#""financial_status":"paid""#,
    );
    let paid = edit(
        &paid,
        r#""cancelled_at":"2026-11-21T08:15:00-05:00""#,
        r#""cancelled_at":null"#,
    );
    let older = shopify::parse("orders/paid", paid.as_bytes()).unwrap();
    let Delivery::Order(snapshot) = &older else {
        panic!()
    };
    assert!(snapshot.cancellation.is_none());
    assert!(matches!(snapshot.payment, SnapshotPayment::Paid { .. }));
    assert_eq!(apply(&mut order, &older), Vec::<&str>::new());
    assert_eq!(placed(&order).status(), OrderStatus::Cancelled);
}

#[test]
fn totals_that_disagree_with_the_platforms_are_refused() {
    let body = String::from_utf8(fixture(Platform::Shopify, "orders-create.json")).unwrap();
    let wrong = edit(
        &body,
        r#""total_price":"58.71""#,
        r#""total_price":"60.71""#,
    );
    let error = shopify::parse("orders/create", wrong.as_bytes()).unwrap_err();
    assert_eq!(
        error,
        PayloadError::TotalsDisagree {
            computed: 5871,
            platform: usd(6071)
        }
    );
    assert_eq!(error.code(), "totals_disagree");
}

#[test]
fn a_broken_payload_names_the_field_that_broke() {
    let body = String::from_utf8(fixture(Platform::Shopify, "orders-create.json")).unwrap();
    let precise = edit(&body, r#""price":"15.00""#, r#""price":"15.005""#);
    let error = shopify::parse("orders/create", precise.as_bytes()).unwrap_err();
    assert_eq!(error.code(), "invalid_amount");
    assert!(
        matches!(&error, PayloadError::InvalidAmount { field, raw, .. } if field == "line_items[0].price" && raw == "15.005"),
        "{error:?}"
    );
    let zero = edit(&body, r#""quantity":2"#, r#""quantity":0"#);
    let error = shopify::parse("orders/create", zero.as_bytes()).unwrap_err();
    assert!(
        matches!(&error, PayloadError::InvalidValue { field, .. } if field == "line_items[0].quantity"),
        "{error:?}"
    );
    let missing = edit(&body, r#""currency":"USD","#, "");
    let error = shopify::parse("orders/create", missing.as_bytes()).unwrap_err();
    assert_eq!(
        error,
        PayloadError::MissingField {
            path: "currency".to_owned()
        }
    );
    assert_eq!(error.code(), "invalid_payload");
    let id_as_float = edit(&body, r#""id":5712036428813373457"#, r#""id":5.7e18"#);
    let error = shopify::parse("orders/create", id_as_float.as_bytes()).unwrap_err();
    assert!(
        matches!(&error, PayloadError::InvalidField { path, .. } if path == "id"),
        "{error:?}"
    );
    let error = shopify::parse("orders/create", b"{\"id\":").unwrap_err();
    assert!(matches!(error, PayloadError::NotJson { .. }), "{error:?}");
    let gold = edit(&body, r#""currency":"USD""#, r#""currency":"XAU""#);
    let error = shopify::parse("orders/create", gold.as_bytes()).unwrap_err();
    assert_eq!(error.code(), "unsupported_currency");
}

// --- WooCommerce ---------------------------------------------------------------------------

#[test]
fn each_woocommerce_status_maps_to_what_our_order_follows() {
    let pending = snapshot(Platform::WooCommerce, "order-updated.pending.json");
    assert_eq!(pending.payment, SnapshotPayment::None);
    assert!(pending.fulfillments.is_empty() && pending.cancellation.is_none());
    assert_eq!(pending.created_at, utc("2026-11-21T12:05:07Z"));

    let processing = snapshot(Platform::WooCommerce, "order-updated.processing.json");
    assert_eq!(
        processing.payment,
        SnapshotPayment::Paid {
            amount: usd(5886),
            at: Some(utc("2026-11-21T12:06:38Z"))
        }
    );
    assert!(processing.fulfillments.is_empty());

    let completed = snapshot(Platform::WooCommerce, "order-updated.completed.json");
    assert!(matches!(completed.payment, SnapshotPayment::Paid { .. }));
    assert_eq!(completed.fulfillments.len(), 1);
    let done = &completed.fulfillments[0];
    assert_eq!(done.key, FulfillmentKey::WholeOrder);
    assert_eq!(done.lines, None);
    assert_eq!(done.delivered_at, Some(utc("2026-11-23T15:20:10Z")));

    let refunded = snapshot(Platform::WooCommerce, "order-updated.refunded.json");
    let refunds: Vec<_> = refunded
        .refunds
        .iter()
        .map(|r| (r.key.clone(), r.amount.amount()))
        .collect();
    assert_eq!(
        refunds,
        [
            (RefundKey::Platform("4190".to_owned()), 1000),
            (RefundKey::Remainder, 4886)
        ]
    );
    assert_eq!(refunded.fulfillments.len(), 1, "it was completed before");

    let failed = snapshot(Platform::WooCommerce, "order-updated.failed.json");
    assert_eq!(
        failed.payment,
        SnapshotPayment::Failed {
            at: Some(utc("2026-11-22T08:01:12Z"))
        }
    );

    let cancelled = snapshot(Platform::WooCommerce, "order-updated.cancelled.json");
    assert_eq!(cancelled.payment, SnapshotPayment::None);
    assert_eq!(
        cancelled.cancellation.as_ref().unwrap().at,
        utc("2026-11-22T09:30:00Z")
    );
    assert_eq!(cancelled.customer_id.as_str(), "guest");

    let body =
        String::from_utf8(fixture(Platform::WooCommerce, "order-updated.pending.json")).unwrap();
    for status in ["trash", "checkout-draft"] {
        let binned = edit(
            &body,
            r#""status":"pending""#,
            &format!(r#""status":"{status}""#),
        );
        assert!(matches!(
            woocommerce::parse("order.updated", binned.as_bytes()),
            Ok(Delivery::Ignored { .. })
        ));
    }
    let on_hold = edit(&body, r#""status":"pending""#, r#""status":"on-hold""#);
    let Ok(Delivery::Order(on_hold)) = woocommerce::parse("order.updated", on_hold.as_bytes())
    else {
        panic!()
    };
    assert_eq!(on_hold.payment, SnapshotPayment::None);
    let custom = edit(
        &body,
        r#""status":"pending""#,
        r#""status":"awaiting-pickup""#,
    );
    let error = woocommerce::parse("order.updated", custom.as_bytes()).unwrap_err();
    assert_eq!(error.code(), "unsupported_status");
}

#[test]
fn woocommerce_lines_are_priced_from_their_subtotals_and_coupons_taken_off_them() {
    let s = snapshot(Platform::WooCommerce, "order-updated.pending.json");
    assert_eq!(s.external_number.as_ref().unwrap().as_str(), "4127");
    assert_eq!(s.customer_id.as_str(), "17");
    let lines: Vec<_> = s
        .lines
        .iter()
        .map(|l| {
            (
                l.line_id.as_str(),
                l.unit_price.amount(),
                l.discounts[0].amount.amount(),
            )
        })
        .collect();
    assert_eq!(lines, [("311", 1500, 300), ("312", 2500, 250)]);
    assert_eq!(s.lines[0].discounts[0].title.as_str(), "summer10");
    assert_eq!(s.tax_lines[0].amount.amount(), 436);
    assert_eq!(s.shipping_lines[0].title.as_str(), "Flat rate");
    assert_eq!(s.total.amount(), 5886);
}

#[test]
fn a_jpy_store_that_writes_two_decimals_is_read_in_whole_yen() {
    let s = snapshot(Platform::WooCommerce, "order-created.jpy.json");
    assert_eq!(s.lines[0].unit_price.amount(), 1000);
    assert_eq!(s.total.amount(), 2800);
}

#[test]
fn a_woocommerce_order_through_its_statuses_ends_refunded_shipped_and_delivered() {
    let mut order = Order::default();
    for (name, expected) in [
        ("order-updated.pending.json", vec!["place"]),
        ("order-updated.processing.json", vec!["attempt", "capture"]),
        ("order-updated.completed.json", vec!["dispatch", "deliver"]),
        ("order-updated.refunded.json", vec!["refund", "refund"]),
    ] {
        assert_eq!(apply(&mut order, &woo(name)), expected, "{name}");
    }
    let o = placed(&order);
    assert_eq!(o.order_id.as_str(), "myshop-4127");
    assert_eq!(o.status(), OrderStatus::Refunded);
    assert_eq!(o.shipments[0].shipment_id.as_str(), "done");
    assert_eq!(o.shipments[0].carrier.as_str(), "unknown");
    assert!(o.fulfilled_at.is_some());
    let refunds: Vec<_> = o
        .refunds
        .iter()
        .map(|r| (r.refund_id.as_str(), r.amount.amount()))
        .collect();
    assert_eq!(refunds, [("r4190", 1000), ("r-rest", 4886)]);
    assert_eq!(o.payments[0].attempted_at, utc("2026-11-21T12:06:38Z"));
    for name in [
        "order-updated.pending.json",
        "order-updated.processing.json",
        "order-updated.completed.json",
        "order-updated.refunded.json",
    ] {
        assert_eq!(
            apply(&mut order, &woo(name)),
            Vec::<&str>::new(),
            "again: {name}"
        );
    }
}

#[test]
fn a_refund_listed_after_the_rest_was_taken_changes_nothing() {
    let mut order = Order::default();
    apply(&mut order, &woo("order-updated.refunded.json"));
    // Woo lists the rest as a refund of its own later: the order has it already.
    let body = String::from_utf8(fixture(
        Platform::WooCommerce,
        "order-updated.refunded.json",
    ))
    .unwrap();
    let listed = edit(
        &body,
        r#""refunds":[{"id":4190,"reason":"Mug arrived chipped","total":"-10.00"}]"#,
        r#""refunds":[{"id":4191,"reason":"","total":"-48.86"},{"id":4190,"reason":"Mug arrived chipped","total":"-10.00"}]"#,
    );
    let later = woocommerce::parse("order.updated", listed.as_bytes()).unwrap();
    let Delivery::Order(snapshot) = &later else {
        panic!()
    };
    assert_eq!(
        snapshot.refunds.len(),
        2,
        "no rest beyond the listed refunds"
    );
    assert_eq!(apply(&mut order, &later), Vec::<&str>::new());
    assert_eq!(placed(&order).refunded, usd(5886));
}

#[test]
fn a_failed_woocommerce_payment_is_recorded_once_and_a_later_payment_gets_its_own_id() {
    let mut order = Order::default();
    let failed = woo("order-updated.failed.json");
    assert_eq!(apply(&mut order, &failed), ["place", "attempt", "fail"]);
    assert_eq!(apply(&mut order, &failed), Vec::<&str>::new());
    let body =
        String::from_utf8(fixture(Platform::WooCommerce, "order-updated.failed.json")).unwrap();
    let paid = body
        .replace(r#""status":"failed""#, r#""status":"processing""#)
        .replace(
            r#""date_paid_gmt":null"#,
            r#""date_paid_gmt":"2026-11-22T08:05:00""#,
        );
    let paid = woocommerce::parse("order.updated", paid.as_bytes()).unwrap();
    assert_eq!(apply(&mut order, &paid), ["attempt", "capture"]);
    let ids: Vec<_> = placed(&order)
        .payments
        .iter()
        .map(|p| (p.payment_id.as_str(), p.status))
        .collect();
    assert_eq!(
        ids,
        [
            ("pay-4129", PaymentStatus::Failed),
            ("pay-4129-2", PaymentStatus::Captured)
        ]
    );
    assert_eq!(
        apply(&mut order, &failed),
        Vec::<&str>::new(),
        "the old failure again"
    );
}

#[test]
fn a_cancelled_woocommerce_order_is_placed_and_cancelled() {
    let mut order = Order::default();
    assert_eq!(
        apply(&mut order, &woo("order-updated.cancelled.json")),
        ["place", "cancel"]
    );
    let o = placed(&order);
    assert_eq!(
        o.cancellation.as_ref().unwrap().reason.as_str(),
        "cancelled on the storefront"
    );
}

#[test]
fn a_ping_a_deletion_and_a_restore_move_no_order() {
    assert_eq!(
        woocommerce::parse("", b"webhook_id=42"),
        Ok(Delivery::Ignored {
            reason: "a WooCommerce webhook ping"
        })
    );
    assert!(matches!(
        woo("order-deleted.json"),
        Delivery::Ignored { .. }
    ));
    assert!(matches!(
        woocommerce::parse("order.restored", b"{}"),
        Ok(Delivery::Ignored { .. })
    ));
    assert!(!woocommerce::is_ping(b"webhook_id=42&x=1"));
    assert!(!woocommerce::is_ping(b"{\"webhook_id\":42}"));
}

// --- The plan's own rules -------------------------------------------------------------------

#[test]
fn two_lines_of_one_sku_merge_at_one_price_and_are_refused_at_two() {
    let mut s = snapshot(Platform::Shopify, "orders-create.escaped.json");
    let mut second = s.lines[0].clone();
    second.line_id = "99".to_owned();
    s.lines.push(second.clone());
    s.total = usd(3000);
    let Ok(Some(Step::Place(place))) =
        next_step(&source(), &Delivery::Order(s.clone()), None, received())
    else {
        panic!()
    };
    assert_eq!(place.lines.len(), 1);
    assert_eq!(place.lines[0].quantity.get(), 2);

    s.lines[1].unit_price = usd(1400);
    let error = next_step(&source(), &Delivery::Order(s), None, received()).unwrap_err();
    assert_eq!(error.code(), "conflicting_line_prices");
}

#[test]
fn an_order_id_too_long_for_our_ids_is_refused() {
    let long = SourceName::parse(&"s".repeat(40)).unwrap();
    assert_eq!(
        order_id(&long, "18446744073709551615")
            .unwrap()
            .as_str()
            .len(),
        61
    );
    let error = order_id(&long, &"9".repeat(30)).unwrap_err();
    assert_eq!(error.code(), "invalid_value");
}

#[test]
fn a_paid_amount_other_than_our_orders_total_is_refused() {
    let mut order = Order::default();
    apply(&mut order, &shopify("orders-create.json"));
    let body = String::from_utf8(fixture(Platform::Shopify, "orders-paid.json")).unwrap();
    let edited = body
        .replace(r#""total_price":"58.71""#, r#""total_price":"73.71""#)
        .replacen(r#""price":"15.00""#, r#""price":"22.50""#, 1);
    let edited = shopify::parse("orders/paid", edited.as_bytes()).unwrap();
    let error = next_step(&source(), &edited, order.placed(), received()).unwrap_err();
    assert_eq!(error.code(), "payment_disagrees");
}

#[test]
fn a_refund_that_only_restocked_moves_no_money() {
    let mut refund: serde_json::Value =
        serde_json::from_slice(&fixture(Platform::Shopify, "refunds-create.partial.json")).unwrap();
    refund["transactions"] = serde_json::json!([]);
    let body = serde_json::to_vec(&refund).unwrap();
    assert!(matches!(
        shopify::parse("refunds/create", &body),
        Ok(Delivery::Ignored { .. })
    ));
    // Inside an order it is a refund of nothing, which our order does not record.
    let mut order: serde_json::Value =
        serde_json::from_slice(&fixture(Platform::Shopify, "orders-updated.refunded.json"))
            .unwrap();
    order["refunds"][1]["transactions"] = serde_json::json!([]);
    order["financial_status"] = serde_json::json!("partially_refunded");
    let order = shopify::parse("orders/updated", &serde_json::to_vec(&order).unwrap()).unwrap();
    let mut ours = Order::default();
    apply(&mut ours, &order);
    assert_eq!(placed(&ours).refunds.len(), 1);
    assert_eq!(placed(&ours).status(), OrderStatus::PartiallyRefunded);
}

#[test]
fn a_shopify_order_s_personal_data_is_read_from_its_addresses_email_and_phone() {
    let s = snapshot(Platform::Shopify, "orders-create.json");
    let p = &s.personal;
    assert_eq!(p.email.as_ref().unwrap().as_str(), "ada@example.com");
    let shipping = p.shipping_address.as_ref().unwrap();
    assert_eq!(shipping.name.as_str(), "Ada Lovelace");
    assert_eq!(shipping.line1.as_str(), "350 Fifth Avenue");
    assert_eq!(shipping.line2.as_ref().unwrap().as_str(), "Suite 4100");
    assert_eq!(shipping.postal_code.as_str(), "10118");
    assert!(p.billing_address.is_some());
    // The order has no phone of its own: the shipping address's stands for it.
    assert_eq!(p.phone.as_ref().unwrap().as_str(), "+12125550143");
}

#[test]
fn a_woocommerce_order_s_personal_data_is_read_from_billing_and_shipping() {
    let s = snapshot(Platform::WooCommerce, "order-updated.processing.json");
    let p = &s.personal;
    assert_eq!(p.email.as_ref().unwrap().as_str(), "grace@example.com");
    assert_eq!(p.phone.as_ref().unwrap().as_str(), "+441315550172");
    let shipping = p.shipping_address.as_ref().unwrap();
    assert_eq!(shipping.name.as_str(), "Grace Hopper");
    assert_eq!(shipping.city.as_str(), "Leith");
    // An empty second line or note is no line and no note.
    assert!(shipping.line2.is_none());
    assert!(p.note.is_none());
}

#[test]
fn personal_data_our_rules_refuse_is_left_out_not_the_order() {
    let mut body: serde_json::Value =
        serde_json::from_slice(&fixture(Platform::Shopify, "orders-create.json")).unwrap();
    body["email"] = serde_json::json!("not an email");
    body["contact_email"] = serde_json::Value::Null;
    body["shipping_address"]["country_code"] = serde_json::Value::Null;
    let delivery = parse(
        Platform::Shopify,
        "orders/create",
        body.to_string().as_bytes(),
    )
    .unwrap();
    let Delivery::Order(s) = delivery else {
        panic!("an order")
    };
    assert!(s.personal.email.is_none());
    assert!(s.personal.shipping_address.is_none());
    assert!(s.personal.billing_address.is_some());
}
