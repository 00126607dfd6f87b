//! The directory against a real database: SQLite always, PostgreSQL when
//! `CIVITAS_TEST_POSTGRES_URL` names a server.

use std::time::Duration;

use civitas_core::xroad::{ClientId, MemberId, ServiceId};

use crate::{Directory, Endpoint, ExchangeError, NewService, allowed_endpoints};

/// A fresh directory on SQLite, and on PostgreSQL too when a server is given.
async fn engines(name: &str) -> Vec<Directory> {
    civitas_ledger::testing::ledgers_on_both_engines(
        &format!("exchange-{name}"),
        &[crate::COMPONENT],
    )
    .await
    .into_iter()
    .map(|(db, ledger)| Directory::new(db, ledger, "TW"))
    .collect()
}

const PETS: &str = r#"{"openapi":"3.0.3","info":{"title":"t","version":"1"},
  "paths":{"/persons/{id}":{"get":{},"delete":{}},"/persons":{"get":{},"post":{}},"/health":{"get":{}}}}"#;

async fn country(d: &Directory) -> (ClientId, ClientId, ServiceId) {
    let hro = MemberId::new("TW", "GOV", "HRO").unwrap();
    let moda = MemberId::new("TW", "GOV", "MODA").unwrap();
    d.add_member(&hro, "Household Registration Office", "operator:test")
        .await
        .unwrap();
    d.add_member(&moda, "Ministry of Digital Affairs", "operator:test")
        .await
        .unwrap();
    let population = hro.subsystem("population").unwrap();
    let portal = moda.subsystem("portal").unwrap();
    d.add_subsystem(
        &population,
        "Population register",
        "127.0.0.1/32",
        "operator:test",
    )
    .await
    .unwrap();
    d.add_subsystem(&portal, "", "10.0.0.0/8", "operator:test")
        .await
        .unwrap();
    let persons = population.service("persons").unwrap();
    d.add_service(
        NewService {
            id: persons.clone(),
            base_url: "http://127.0.0.1:9/api/".into(),
            openapi: Some(PETS.into()),
            endpoints: Vec::new(),
            personal: true,
        },
        "operator:test",
    )
    .await
    .unwrap();
    (population, portal, persons)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_holds_members_subsystems_services_and_their_endpoints() {
    for d in engines("directory").await {
        directory_holds(&d).await;
    }
}

async fn directory_holds(d: &Directory) {
    let (population, portal, persons) = country(d).await;
    assert_eq!(d.members().await.unwrap().len(), 2);
    let subs = d.subsystems().await.unwrap();
    assert_eq!(subs.len(), 2);
    let p = d.subsystem(&portal).await.unwrap().unwrap();
    assert_eq!(
        (p.name.as_str(), p.member_name.as_str()),
        ("portal", "Ministry of Digital Affairs")
    );
    let s = d.service(&persons).await.unwrap().unwrap();
    assert_eq!(s.kind, "OPENAPI");
    assert_eq!(s.base_url, "http://127.0.0.1:9/api");
    assert!(s.personal);
    let e = |m: &str, p: &str| Endpoint {
        method: m.into(),
        path: p.into(),
    };
    assert_eq!(
        s.endpoints,
        vec![
            e("GET", "/health"),
            e("GET", "/persons"),
            e("POST", "/persons"),
            e("DELETE", "/persons/*"),
            e("GET", "/persons/*")
        ]
    );
    assert_eq!(d.services(&population).await.unwrap().len(), 1);
    assert!(
        d.openapi(&persons)
            .await
            .unwrap()
            .unwrap()
            .contains("/persons/{id}")
    );

    // Duplicates, unknown parents, another instance and bad input are refused with a reason.
    let hro = MemberId::new("TW", "GOV", "HRO").unwrap();
    assert!(matches!(
        d.add_member(&hro, "again", "t").await,
        Err(ExchangeError::Conflict(_))
    ));
    let other = MemberId::new("EE", "GOV", "X").unwrap();
    assert!(matches!(
        d.add_member(&other, "x", "t").await,
        Err(ExchangeError::Invalid(_))
    ));
    let orphan = MemberId::new("TW", "COM", "NOBODY")
        .unwrap()
        .subsystem("s")
        .unwrap();
    assert!(matches!(
        d.add_subsystem(&orphan, "", "127.0.0.1", "t").await,
        Err(ExchangeError::NotFound(_))
    ));
    let bad_net = hro.subsystem("other").unwrap();
    assert!(matches!(
        d.add_subsystem(&bad_net, "", "everywhere", "t").await,
        Err(ExchangeError::Invalid(_))
    ));
    for (url, doc) in [
        ("ftp://x", None),
        ("http://x?y=1", None),
        ("http://x", Some("{\"swagger\":\"2.0\"}")),
    ] {
        let r = d
            .add_service(
                NewService {
                    id: population.service("more").unwrap(),
                    base_url: url.into(),
                    openapi: doc.map(str::to_string),
                    endpoints: Vec::new(),
                    personal: false,
                },
                "t",
            )
            .await;
        assert!(matches!(r, Err(ExchangeError::Invalid(_))), "{url} {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rights_open_a_method_under_a_path_prefix_and_nothing_else() {
    for d in engines("rights").await {
        rights_open(&d).await;
    }
}

async fn rights_open(d: &Directory) {
    let (population, portal, persons) = country(d).await;
    assert!(
        !d.may_call(&portal, &persons, "GET", "/persons/1")
            .await
            .unwrap()
    );
    d.grant(&persons, &portal, "get", "/persons", "operator:test")
        .await
        .unwrap();
    for (m, p, ok) in [
        ("GET", "/persons", true),
        ("GET", "/persons/A123", true),
        ("get", "/persons/A123/household", true),
        ("POST", "/persons", false),
        ("GET", "/personsX", false),
        ("GET", "/health", false),
    ] {
        assert_eq!(
            d.may_call(&portal, &persons, m, p).await.unwrap(),
            ok,
            "{m} {p}"
        );
    }
    // The other direction holds nothing.
    assert!(
        !d.may_call(&population, &persons, "GET", "/persons")
            .await
            .unwrap()
    );
    // allowedMethods: the endpoints the rights open.
    let rights = d.rights_of(&portal, Some(&population)).await.unwrap();
    let service = d.service(&persons).await.unwrap().unwrap();
    let allowed: Vec<String> = allowed_endpoints(&service, &rights)
        .into_iter()
        .map(|e| format!("{} {}", e.method, e.path))
        .collect();
    assert_eq!(allowed, ["GET /persons", "GET /persons/*"]);
    // Granting twice, revoking what is not there and bad methods or paths are refused.
    assert!(matches!(
        d.grant(&persons, &portal, "GET", "/persons", "t").await,
        Err(ExchangeError::Conflict(_))
    ));
    assert!(matches!(
        d.grant(&persons, &portal, "FETCH", "/", "t").await,
        Err(ExchangeError::Invalid(_))
    ));
    assert!(matches!(
        d.grant(&persons, &portal, "GET", "/a/../b", "t").await,
        Err(ExchangeError::Invalid(_))
    ));
    assert!(matches!(
        d.revoke(&persons, &portal, "POST", "/persons", "t").await,
        Err(ExchangeError::NotFound(_))
    ));
    // Any method under the root, then revoked: back to nothing.
    d.grant(&persons, &portal, "*", "/", "t").await.unwrap();
    assert!(
        d.may_call(&portal, &persons, "DELETE", "/health")
            .await
            .unwrap()
    );
    d.revoke(&persons, &portal, "*", "/", "t").await.unwrap();
    d.revoke(&persons, &portal, "GET", "/persons", "t")
        .await
        .unwrap();
    assert!(
        !d.may_call(&portal, &persons, "GET", "/persons")
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_see_this_processs_changes_at_once_and_others_within_the_refresh() {
    for d in engines("snapshot").await {
        let (_population, portal, persons) = country(&d).await;
        assert!(
            !d.snapshot()
                .await
                .unwrap()
                .may_call(&portal, &persons, "GET", "/persons")
        );
        // A change through any directory of this process: in the very next snapshot.
        d.grant(&persons, &portal, "GET", "/persons", "t")
            .await
            .unwrap();
        assert!(
            d.snapshot()
                .await
                .unwrap()
                .may_call(&portal, &persons, "GET", "/persons")
        );
        // A change another process made (written straight to the table here): seen once
        // the snapshot is older than the refresh interval.
        civitas_store::sqlx::query("DELETE FROM exchange_access")
            .execute(d.db().pool())
            .await
            .unwrap();
        let cached = d.snapshot().await.unwrap();
        assert!(
            cached.may_call(&portal, &persons, "GET", "/persons"),
            "still the cached one"
        );
        tokio::time::sleep(crate::directory::REFRESH + Duration::from_millis(100)).await;
        assert!(
            !d.snapshot()
                .await
                .unwrap()
                .may_call(&portal, &persons, "GET", "/persons")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_have_keys_of_their_own_and_the_configuration_carries_them_signed() {
    use crate::keys::GatewayKeys;
    for d in engines("gateways").await {
        let _ = country(&d).await;
        let hro = MemberId::new("TW", "GOV", "HRO").unwrap();
        let moda = MemberId::new("TW", "GOV", "MODA").unwrap();
        let version = d.configuration(0).await.unwrap().version;
        let keys = GatewayKeys::generate().unwrap().public();
        let bad = |e: ExchangeError| e.to_string();
        assert!(
            bad(d
                .add_gateway(&hro, "http://gw.hro:5500", &keys, "t")
                .await
                .unwrap_err())
            .contains("https")
        );
        d.add_gateway(&hro, "https://gw.hro:5500", &keys, "t")
            .await
            .unwrap();
        // Another member may not register the same keys: calls are attributed by them.
        let taken = d
            .add_gateway(&moda, "https://gw.moda:5500", &keys, "t")
            .await
            .unwrap_err();
        assert!(matches!(taken, ExchangeError::Conflict(_)), "{taken}");
        d.add_gateway(
            &moda,
            "https://gw.moda:5500",
            &GatewayKeys::generate().unwrap().public(),
            "t",
        )
        .await
        .unwrap();
        // Every change bumps the version; the signed configuration verifies under the anchor.
        let anchor = d.anchor().await.unwrap();
        let signed = d
            .signed_configuration(Duration::from_secs(60))
            .await
            .unwrap();
        let conf = crate::configuration::verify(&serde_json::to_string(&signed).unwrap(), &anchor)
            .unwrap();
        assert_eq!(conf.version, version + 2);
        assert_eq!(conf.gateways.len(), 2);
        let snapshot = d.snapshot().await.unwrap();
        let der = conf.gateways[0].certificate_der().unwrap();
        assert_eq!(
            snapshot
                .gateway_with_certificate(&der)
                .map(|g| g.gateway.member.clone()),
            Some(conf.gateways[0].member.clone())
        );
        d.revoke_gateway(&hro, "t").await.unwrap();
        assert!(d.snapshot().await.unwrap().gateway_of(&hro).is_none());
        assert!(matches!(
            d.revoke_gateway(&hro, "t").await.unwrap_err(),
            ExchangeError::NotFound(_)
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_the_directory_recorded_leave_the_outbox_and_the_rest_wait() {
    use crate::tracker::{Report, outbox_record, pending, sent};
    for (db, _ledger) in
        civitas_ledger::testing::ledgers_on_both_engines("exchange-outbox", &[crate::COMPONENT])
            .await
    {
        let report = |i: i64| Report {
            id: format!("r-{i}"),
            time_ms: 1_000 + i,
            client: "TW/GOV/MODA/portal".into(),
            service: "TW/GOV/HRO/population/persons".into(),
            x_road_id: format!("x-{i}"),
            method: "GET".into(),
            status: 200,
            user: "A123456789".into(),
            purpose: "benefit".into(),
            legal_basis: "law".into(),
            consent_reference: None,
            represented_party: None,
            deferred_until_ms: None,
            deferral_reason: None,
        };
        let mut conn = db.pool().acquire().await.unwrap();
        for i in 0..600 {
            outbox_record(&report(i))
                .unwrap()
                .execute(&mut conn, db.engine())
                .await
                .unwrap();
        }
        drop(conn);
        assert_eq!(pending(&db, 1000).await.unwrap().len(), 600);
        // Recorded: every other one, more than one statement's worth, and one never queued.
        let mut done: Vec<String> = (0..600).step_by(2).map(|i| format!("r-{i}")).collect();
        done.push("r-unknown".into());
        sent(&db, &done).await.unwrap();
        sent(&db, &[]).await.unwrap();
        let left = pending(&db, 1000).await.unwrap();
        assert_eq!(left.len(), 300);
        assert!(
            left.iter()
                .all(|r| r.id[2..].parse::<i64>().unwrap() % 2 == 1)
        );
        // Oldest first, whole.
        assert_eq!(left[0], report(1));
    }
}
