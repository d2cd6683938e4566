//! The guard's decisions: every range and spelling, names, and the resolver hook.

use std::collections::HashMap;

use super::*;

fn url(raw: &str) -> Url {
    Url::parse(raw).unwrap()
}

fn strict() -> TargetPolicy {
    TargetPolicy::new(false)
}

/// A resolver that knows a fixed table, and nothing else.
fn table(entries: &[(&str, &[&str])]) -> Lookup {
    let table: HashMap<String, Vec<IpAddr>> = entries
        .iter()
        .map(|(name, addresses)| {
            (
                name.to_string(),
                addresses.iter().map(|a| a.parse().unwrap()).collect(),
            )
        })
        .collect();
    Arc::new(move |host: String| {
        let found = table.get(&host).cloned();
        Box::pin(async move {
            found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
        })
    })
}

fn class_of(raw: &str) -> Option<Forbidden> {
    classify(raw.parse().unwrap()).map(|r| r.class)
}

#[test]
fn every_numeric_spelling_of_127_0_0_1_parses_to_the_one_address() {
    for spelling in [
        "127.0.0.1",
        "127.1",
        "127.0.1",
        "2130706433",
        "0x7f000001",
        "0x7f.1",
        "017700000001",
        "0177.0.0.1",
        "127.0.0.1.",
    ] {
        let parsed = url(&format!("http://{spelling}/"));
        assert_eq!(
            parsed.host(),
            Some(url::Host::Ipv4(Ipv4Addr::LOCALHOST)),
            "{spelling}"
        );
        assert!(
            matches!(
                strict().check_without_lookup(&parsed),
                Err(TargetError::Address {
                    refused: Refused {
                        class: Forbidden::Loopback,
                        ..
                    },
                    ..
                })
            ),
            "{spelling} is refused as loopback"
        );
    }
}

#[test]
fn ipv4_ranges_are_classified() {
    for (address, class) in [
        ("169.254.169.254", Forbidden::CloudMetadata),
        ("169.254.170.2", Forbidden::CloudMetadata),
        ("100.100.100.200", Forbidden::CloudMetadata),
        ("0.0.0.0", Forbidden::Unspecified),
        ("0.1.2.3", Forbidden::ThisNetwork),
        ("127.255.0.1", Forbidden::Loopback),
        ("10.0.0.1", Forbidden::Private),
        ("172.16.0.1", Forbidden::Private),
        ("172.31.255.255", Forbidden::Private),
        ("192.168.0.1", Forbidden::Private),
        ("100.64.0.1", Forbidden::SharedAddressSpace),
        ("100.127.255.255", Forbidden::SharedAddressSpace),
        ("169.254.1.1", Forbidden::LinkLocal),
        ("192.0.0.8", Forbidden::ProtocolAssignment),
        ("192.0.2.1", Forbidden::Documentation),
        ("198.51.100.1", Forbidden::Documentation),
        ("203.0.113.1", Forbidden::Documentation),
        ("198.18.0.1", Forbidden::Benchmarking),
        ("198.19.255.255", Forbidden::Benchmarking),
        ("192.88.99.1", Forbidden::Reserved),
        ("224.0.0.1", Forbidden::Multicast),
        ("239.255.255.250", Forbidden::Multicast),
        ("240.0.0.1", Forbidden::Reserved),
        ("255.255.255.255", Forbidden::Broadcast),
    ] {
        assert_eq!(class_of(address), Some(class), "{address}");
    }
    for public in [
        "93.184.215.14",
        "8.8.8.8",
        "172.15.255.255",
        "172.32.0.1",
        "100.63.255.255",
        "100.128.0.1",
        "198.20.0.1",
        "223.255.255.255",
        "1.1.1.1",
    ] {
        assert_eq!(class_of(public), None, "{public}");
    }
}

#[test]
fn ipv6_ranges_and_embedded_ipv4_are_classified() {
    for (address, class) in [
        ("::", Forbidden::Unspecified),
        ("::1", Forbidden::Loopback),
        ("fc00::1", Forbidden::UniqueLocal),
        ("fd12:3456::1", Forbidden::UniqueLocal),
        ("fd00:ec2::254", Forbidden::CloudMetadata),
        ("fe80::1", Forbidden::LinkLocal),
        ("febf::1", Forbidden::LinkLocal),
        ("fec0::1", Forbidden::SiteLocal),
        ("ff02::1", Forbidden::Multicast),
        ("2001:db8::1", Forbidden::Documentation),
        ("3fff::1", Forbidden::Documentation),
        ("2001:2::1", Forbidden::Benchmarking),
        ("100::1", Forbidden::Reserved),
        ("64:ff9b:1::1", Forbidden::Private),
        // IPv4-compatible, even of a public address: deprecated, never routed.
        ("::8.8.8.8", Forbidden::Reserved),
    ] {
        assert_eq!(class_of(address), Some(class), "{address}");
    }
    for (address, class, v4) in [
        (
            "::ffff:169.254.169.254",
            Forbidden::CloudMetadata,
            "169.254.169.254",
        ),
        ("::ffff:127.0.0.1", Forbidden::Loopback, "127.0.0.1"),
        ("::ffff:10.1.2.3", Forbidden::Private, "10.1.2.3"),
        ("::127.0.0.1", Forbidden::Loopback, "127.0.0.1"),
        ("::10.0.0.1", Forbidden::Private, "10.0.0.1"),
        ("64:ff9b::127.0.0.1", Forbidden::Loopback, "127.0.0.1"),
        (
            "64:ff9b::a9fe:a9fe",
            Forbidden::CloudMetadata,
            "169.254.169.254",
        ),
        ("2002:7f00:1::1", Forbidden::Loopback, "127.0.0.1"),
        ("2002:c0a8:1::", Forbidden::Private, "192.168.0.1"),
    ] {
        assert_eq!(
            classify(address.parse().unwrap()),
            Some(Refused {
                class,
                embedded: Some(v4.parse().unwrap())
            }),
            "{address}"
        );
    }
    for public in [
        "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
        "2001:4860:4860::8888",
        "::ffff:93.184.215.14",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ] {
        assert_eq!(class_of(public), None, "{public}");
    }
}

#[test]
fn bracketed_ipv6_urls_are_judged_by_their_address() {
    for raw in [
        "http://[::1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:7f00:1]/",
        "http://[::127.0.0.1]/",
        "http://[fc00::1]/",
        "http://[fe80::1]/",
        "http://[fec0::1]/",
        "http://[ff02::1]/",
        "http://[0:0:0:0:0:0:0:1]/",
    ] {
        assert!(
            strict().check_without_lookup(&url(raw)).is_err(),
            "{raw} is refused"
        );
    }
    assert!(strict()
        .check_without_lookup(&url("https://[2001:4860:4860::8888]/"))
        .is_ok());
}

#[test]
fn localhost_metadata_and_private_use_names_are_refused_by_name() {
    for (host, why) in [
        ("localhost", ForbiddenName::Localhost),
        ("LOCALHOST.", ForbiddenName::Localhost),
        ("api.localhost", ForbiddenName::Localhost),
        ("metadata.google.internal", ForbiddenName::CloudMetadata),
        ("metadata.google.internal.", ForbiddenName::CloudMetadata),
        ("db.corp.internal", ForbiddenName::PrivateUse(".internal")),
        ("printer.local", ForbiddenName::PrivateUse(".local")),
        ("nas.home.arpa", ForbiddenName::PrivateUse(".home.arpa")),
    ] {
        let error = strict()
            .check_without_lookup(&url(&format!("http://{host}:5432/")))
            .unwrap_err();
        let expected = host.to_ascii_lowercase();
        assert_eq!(
            error,
            TargetError::Name {
                host: expected,
                why
            },
            "{host}"
        );
    }
    // A suffix, not a substring.
    assert_eq!(classify_name("localhost.example.com"), None);
    assert_eq!(classify_name("notlocal"), None);
    assert_eq!(classify_name("internal.example.com"), None);
}

#[test]
fn hosts_longer_than_dns_allows_are_malformed_not_forbidden() {
    let long = format!("http://{}example.com/", "abcdefghi.".repeat(30));
    let error = strict().check_without_lookup(&url(&long)).unwrap_err();
    assert!(
        matches!(error, TargetError::HostTooLong { .. }),
        "{error:?}"
    );
    assert!(!error.is_forbidden());
    let label = format!("http://{}.example.com/", "a".repeat(64));
    assert_eq!(
        strict().check_without_lookup(&url(&label)),
        Err(TargetError::LabelTooLong)
    );
    let fits = format!("http://{}.com/", "a".repeat(63));
    assert!(strict().check_without_lookup(&url(&fits)).is_ok());
}

#[test]
fn allowing_private_networks_lifts_only_private_networks() {
    let open = TargetPolicy::new(true);
    for raw in [
        "http://127.0.0.1:9000/",
        "http://10.0.0.1/",
        "http://[fc00::1]/",
        "http://[::ffff:192.168.0.1]/",
        "http://localhost:8080/",
        "http://hooks.corp.internal/",
    ] {
        assert_eq!(open.check_without_lookup(&url(raw)), Ok(()), "{raw}");
    }
    for raw in [
        "http://169.254.169.254/",
        "http://[::ffff:169.254.169.254]/",
        "http://metadata.google.internal/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
        "http://0.0.0.0/",
        "http://192.0.2.1/",
    ] {
        let error = open.check_without_lookup(&url(raw)).unwrap_err();
        assert!(
            error.to_string().ends_with("no webhook may target it"),
            "{raw}: {error}"
        );
    }
}

#[test]
fn refusals_say_why_and_what_lifts_them() {
    let error = strict()
        .check_without_lookup(&url("http://10.0.0.1/"))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "points at 10.0.0.1, a private address; set \
         ORDERLOG_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true for on-premises receivers"
    );
    let error = strict()
        .check_without_lookup(&url("http://[::ffff:169.254.169.254]/"))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "points at ::ffff:169.254.169.254, which embeds 169.254.169.254, the cloud \
         metadata service; no webhook may target it"
    );
}

#[tokio::test]
async fn a_name_is_refused_at_create_when_any_address_is_forbidden() {
    let policy = TargetPolicy::with_lookup(
        false,
        table(&[
            ("public.test", &["93.184.215.14"]),
            ("mixed.test", &["93.184.215.14", "10.0.0.1"]),
            ("inside.test", &["fd00::1"]),
        ]),
    );
    assert_eq!(policy.check(&url("https://public.test/hook")).await, Ok(()));
    assert_eq!(
        policy
            .check(&url("https://mixed.test/hook"))
            .await
            .unwrap_err()
            .to_string(),
        "names `mixed.test`, which resolves to 10.0.0.1, a private address; set \
         ORDERLOG_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true for on-premises receivers"
    );
    assert!(policy.check(&url("https://inside.test/")).await.is_err());
    // Unknown here: accepted, and judged again at connect time.
    assert_eq!(policy.check(&url("https://nowhere.test/")).await, Ok(()));
    // Allowed private networks: the same names pass.
    let open = TargetPolicy::with_lookup(true, table(&[("mixed.test", &["10.0.0.1"])]));
    assert_eq!(open.check(&url("https://mixed.test/")).await, Ok(()));
}

#[tokio::test]
async fn a_lookup_that_hangs_is_accepted_after_the_timeout() {
    let hangs: Lookup = Arc::new(|_| Box::pin(std::future::pending()));
    let policy = TargetPolicy::with_lookup(false, hangs);
    tokio::time::pause();
    assert_eq!(policy.check(&url("https://slow.test/")).await, Ok(()));
}

async fn resolve(policy: &TargetPolicy, name: &str) -> Result<Vec<SocketAddr>, String> {
    policy
        .resolver()
        .resolve(name.parse().unwrap())
        .await
        .map(|addrs| addrs.collect())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_connect_time_resolver_filters_out_forbidden_addresses() {
    let lookup = table(&[
        ("rebind.test", &["127.0.0.1"]),
        ("mixed.test", &["10.0.0.1", "93.184.215.14", "::1"]),
        ("public.test", &["93.184.215.14", "2606:2800::1"]),
    ]);
    let policy = TargetPolicy::with_lookup(false, lookup.clone());
    assert_eq!(
        resolve(&policy, "rebind.test").await.unwrap_err(),
        "names `rebind.test`, which resolved only to forbidden addresses: 127.0.0.1, a \
         loopback address; set ORDERLOG_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true for \
         on-premises receivers"
    );
    assert_eq!(
        resolve(&policy, "mixed.test").await.unwrap(),
        vec!["93.184.215.14:0".parse().unwrap()]
    );
    assert_eq!(resolve(&policy, "public.test").await.unwrap().len(), 2);
    assert!(resolve(&policy, "localhost").await.is_err());
    assert!(resolve(&policy, "nowhere.test")
        .await
        .unwrap_err()
        .contains("no such host"));

    let open = TargetPolicy::with_lookup(true, lookup);
    assert_eq!(
        resolve(&open, "rebind.test").await.unwrap(),
        vec!["127.0.0.1:0".parse().unwrap()]
    );
}

/// The resolver as reqwest uses it: a name that passed at create time and now
/// resolves to loopback is never connected to.
#[tokio::test]
async fn a_rebound_name_is_not_connected_to() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let policy = TargetPolicy::with_lookup(false, table(&[("rebind.test", &["127.0.0.1"])]));
    let client = reqwest::Client::builder()
        .dns_resolver(policy.resolver())
        .no_proxy()
        .build()
        .unwrap();
    let error = client
        .post(format!("http://rebind.test:{port}/hook"))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(e) = source {
        chain.push_str(&format!(": {e}"));
        source = e.source();
    }
    assert!(
        chain.contains("resolved only to forbidden addresses"),
        "{chain}"
    );
    let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
    assert!(accepted.is_err(), "nothing connected");
}
