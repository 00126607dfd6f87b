//! Agreements and consent records against a real database: SQLite always, PostgreSQL when
//! `CIVITAS_TEST_POSTGRES_URL` names a server.

use civitas_ledger::Ledger;
use civitas_store::Db;

use crate::{
    Access, AgreementState, Change, ConsentError, ConsentState, Consents, NewAgreement, Purpose,
    verify_receipt,
};

/// Fresh consent blocks on SQLite, and on PostgreSQL too when a server is given.
async fn engines(name: &str) -> Vec<(Consents, Db, Ledger)> {
    let mut out = Vec::new();
    for (db, ledger) in civitas_ledger::testing::ledgers_on_both_engines(
        &format!("consent-{name}"),
        &[crate::COMPONENT],
    )
    .await
    {
        let consents = Consents::open(db.clone(), ledger.clone(), "https://civitas.test/")
            .await
            .unwrap();
        out.push((consents, db, ledger));
    }
    out
}

fn wanted(access: Access) -> NewAgreement {
    NewAgreement {
        purpose: "loan-application".into(),
        legal_basis: "consent".into(),
        items: vec!["population.name".into(), "tax.income".into()],
        retention_days: 30,
        access,
        duration_days: Some(90),
    }
}

async fn approved(c: &Consents, access: Access) -> String {
    if c.purpose("loan-application").await.unwrap().is_none() {
        c.add_purpose(
            &Purpose {
                code: "loan-application".into(),
                name_en: "Loan application".into(),
                name_zh: "貸款申請".into(),
            },
            "operator:test",
        )
        .await
        .unwrap();
    }
    let a = c
        .propose("bank-app", "First Bank", &wanted(access))
        .await
        .unwrap();
    c.decide_agreement(&a.id, true, None, "operator:test")
        .await
        .unwrap();
    a.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreements_name_registered_purposes_real_items_and_an_end_and_wait_for_the_operator() {
    for (c, _, ledger) in engines("agreements").await {
        let purpose = Purpose {
            code: "loan-application".into(),
            name_en: "Loan application".into(),
            name_zh: "貸款申請".into(),
        };
        c.add_purpose(&purpose, "operator:test").await.unwrap();
        assert!(matches!(
            c.add_purpose(&purpose, "operator:test").await,
            Err(ConsentError::Conflict(_))
        ));
        assert!(matches!(
            c.add_purpose(
                &Purpose {
                    code: "Bad Code".into(),
                    ..purpose.clone()
                },
                "operator:test"
            )
            .await,
            Err(ConsentError::Invalid(_))
        ));
        let refused = |tune: fn(&mut NewAgreement)| {
            let mut a = wanted(Access::OneTime);
            tune(&mut a);
            a
        };
        for (bad, says) in [
            (refused(|a| a.duration_days = None), "endless"),
            (refused(|a| a.duration_days = Some(0)), "endless"),
            (refused(|a| a.duration_days = Some(10_000)), "endless"),
            (
                refused(|a| a.purpose = "marketing".into()),
                "registered purpose",
            ),
            (refused(|a| a.legal_basis = "because".into()), "legal basis"),
            (
                refused(|a| a.items = vec!["population.soul".into()]),
                "data item",
            ),
            (refused(|a| a.items = Vec::new()), "1 to 50"),
            (refused(|a| a.retention_days = 0), "retention"),
        ] {
            match c.propose("bank-app", "First Bank", &bad).await {
                Err(ConsentError::Invalid(m)) => assert!(m.contains(says), "{m}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        let a = c
            .propose("bank-app", "First Bank", &wanted(Access::OneTime))
            .await
            .unwrap();
        assert_eq!(a.state, AgreementState::Proposed);
        assert_eq!(
            c.agreements(Some("bank-app")).await.unwrap(),
            vec![a.clone()]
        );
        assert!(c.agreements(Some("other-app")).await.unwrap().is_empty());
        // Not in force yet: nobody can consent to it.
        assert!(matches!(
            c.answer(&a.id, "person:1", true, "citizen").await,
            Err(ConsentError::NotFound(_))
        ));
        // A rejection needs its reason; a decided agreement stays decided.
        assert!(matches!(
            c.decide_agreement(&a.id, false, None, "operator:test")
                .await,
            Err(ConsentError::Invalid(_))
        ));
        let done = c
            .decide_agreement(
                &a.id,
                false,
                Some("asks for more than a loan needs"),
                "operator:test",
            )
            .await
            .unwrap();
        assert_eq!(done.state, AgreementState::Rejected);
        assert!(matches!(
            c.decide_agreement(&a.id, true, None, "operator:test").await,
            Err(ConsentError::Conflict(_))
        ));
        let logged = ledger
            .latest_of_kind("consent.agreement_rejected")
            .await
            .unwrap()
            .unwrap()
            .1;
        assert_eq!(logged.object, format!("consent/agreement/{}", a.id));
        assert_eq!(logged.actor, "operator:test");
        let proposed = ledger
            .latest_of_kind("consent.agreement_proposed")
            .await
            .unwrap()
            .unwrap()
            .1;
        assert_eq!(proposed.actor, "client:bank-app");
        assert_eq!(proposed.public["duration_days"], 90);
    }
}

/// Ends consent `id`'s duration in the past, behind the block's back: what it remembers of
/// the record goes too.
async fn lapse(db: &Db, id: &str) {
    civitas_store::sqlx::query("UPDATE consent_records SET expires_ms = 1 WHERE id = $1")
        .bind(id)
        .execute(db.pool())
        .await
        .unwrap();
    crate::decisions::memory().forget(crate::decisions::key(id).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_is_signed_logged_and_checked_at_every_use_with_a_receipt_that_proves_it() {
    for (c, db, ledger) in engines("records").await {
        let one_time = approved(&c, Access::OneTime).await;
        let periodic = approved(&c, Access::Periodic).await;
        let consent_key = crate::key_from_jwks(&c.jwks()).unwrap();

        // Given: a signed record, in the ledger under the person's tag, with a receipt.
        let given = c
            .answer(&periodic, "person:1", true, "citizen")
            .await
            .unwrap();
        assert_eq!((given.state, given.version), (ConsentState::Given, 1));
        let claims = verify_receipt(&given, &consent_key, ledger.verifier_key()).unwrap();
        assert_eq!(claims["dpv_state"], "dpv:ConsentGiven");
        assert_eq!(claims["personal_data"][1], "tax.income");
        assert_eq!(
            claims["data_subject"],
            ledger
                .subject_secret("person:1")
                .await
                .unwrap()
                .tag()
                .to_string()
        );
        assert_eq!(c.receipt(&given.record_id).await.unwrap(), given);
        let valid = c.check(&given.record_id, Some("bank-app")).await.unwrap();
        assert!(valid.valid, "{valid:?}");
        // Another spelling of the id is not the record, in memory as in the database.
        assert!(matches!(
            c.check(&given.record_id.to_uppercase(), Some("bank-app"))
                .await,
            Err(ConsentError::NotFound(_))
        ));
        // Once in force, not twice; another organisation learns nothing of it.
        assert!(matches!(
            c.answer(&periodic, "person:1", true, "citizen").await,
            Err(ConsentError::Conflict(_))
        ));
        assert!(matches!(
            c.check(&given.record_id, Some("other-app")).await,
            Err(ConsentError::NotFound(_))
        ));
        // Nobody else changes it.
        assert!(matches!(
            c.change(&given.record_id, "person:2", Change::Withdraw, "citizen")
                .await,
            Err(ConsentError::NotFound(_))
        ));

        // Pause and resume (periodic only); paused is not valid.
        let paused = c
            .change(&given.record_id, "person:1", Change::Pause, "citizen")
            .await
            .unwrap();
        assert_eq!((paused.state, paused.version), (ConsentState::Paused, 2));
        assert!(!c.check(&given.record_id, None).await.unwrap().valid);
        let resumed = c
            .change(&given.record_id, "person:1", Change::Resume, "citizen")
            .await
            .unwrap();
        assert_eq!(resumed.state, ConsentState::Given);
        let claims = verify_receipt(&resumed, &consent_key, ledger.verifier_key()).unwrap();
        // Each version names the one before it.
        assert_eq!(
            claims["previous_sha256"],
            civitas_ledger::event::hex(&<sha2::Sha256 as sha2::Digest>::digest(
                paused.record.as_bytes()
            ))
        );
        assert_eq!(
            ledger
                .latest_of_kind("consent.resumed")
                .await
                .unwrap()
                .unwrap()
                .0,
            resumed.ledger_index
        );
        assert!(c.check(&given.record_id, None).await.unwrap().valid);

        // Withdrawn: the very next check refuses, and it stays withdrawn.
        let withdrawn = c
            .change(&given.record_id, "person:1", Change::Withdraw, "citizen")
            .await
            .unwrap();
        assert_eq!(withdrawn.version, 4);
        let check = c.check(&given.record_id, Some("bank-app")).await.unwrap();
        assert!(!check.valid);
        assert_eq!(check.state, ConsentState::Withdrawn);
        assert!(matches!(
            c.change(&given.record_id, "person:1", Change::Resume, "citizen")
                .await,
            Err(ConsentError::Conflict(_))
        ));
        let history = c.history(&given.record_id).await.unwrap();
        assert_eq!(
            history.iter().map(|h| h.state).collect::<Vec<_>>(),
            [
                ConsentState::Given,
                ConsentState::Paused,
                ConsentState::Given,
                ConsentState::Withdrawn
            ]
        );

        // A one-time consent cannot be paused; refusing is recorded too.
        let once = c
            .answer(&one_time, "person:1", true, "citizen")
            .await
            .unwrap();
        assert!(matches!(
            c.change(&once.record_id, "person:1", Change::Pause, "citizen")
                .await,
            Err(ConsentError::Conflict(_))
        ));
        let refusal = c
            .answer(&one_time, "person:3", false, "citizen")
            .await
            .unwrap();
        assert_eq!(refusal.state, ConsentState::Refused);
        assert!(!c.check(&refusal.record_id, None).await.unwrap().valid);

        // Expired: past its duration it is refused, and shown as expired.
        lapse(&db, &once.record_id).await;
        let expired = c.check(&once.record_id, None).await.unwrap();
        assert_eq!(
            (expired.valid, expired.state),
            (false, ConsentState::Expired)
        );
        // A release asks the same question: an expired consent, one-time or periodic,
        // releases nothing.
        let (release, _) = c
            .start_release(&once.record_id, "bank-app", "person:1")
            .await
            .unwrap();
        assert!(!release.valid, "{release:?}");
        let lapsing = c
            .answer(&periodic, "person:6", true, "citizen")
            .await
            .unwrap();
        let (release, _) = c
            .start_release(&lapsing.record_id, "bank-app", "person:6")
            .await
            .unwrap();
        assert!(release.valid, "in force before its end: {release:?}");
        lapse(&db, &lapsing.record_id).await;
        let (release, _) = c
            .start_release(&lapsing.record_id, "bank-app", "person:6")
            .await
            .unwrap();
        assert_eq!(
            (release.valid, release.state),
            (false, ConsentState::Expired)
        );
        // Each state's receipt names its W3C DPV term (pausing has none: Civitas's own).
        for (receipt, term) in [
            (&paused, "civitas:ConsentPaused"),
            (&withdrawn, "dpv:ConsentWithdrawn"),
            (&refusal, "dpv:ConsentRefused"),
        ] {
            let claims = verify_receipt(receipt, &consent_key, ledger.verifier_key()).unwrap();
            assert_eq!(claims["dpv_state"], term);
        }
        // By state now: to the periodic agreement, person 1's consent withdrawn and person
        // 6's expired; to the one-time agreement, person 1's expired and person 3's refusal.
        assert_eq!(
            c.statistics(&one_time).await.unwrap(),
            crate::Statistics {
                expired: 1,
                refused: 1,
                ..Default::default()
            }
        );
        assert_eq!(
            c.statistics(&periodic).await.unwrap(),
            crate::Statistics {
                withdrawn: 1,
                expired: 1,
                ..Default::default()
            }
        );
        let mine = c.records_of("person:1").await.unwrap();
        assert_eq!(mine.len(), 2);
        assert!(
            mine.iter()
                .any(|r| r.effective_state == ConsentState::Expired)
        );

        // Tampered receipts fail.
        let other = c.receipt(&refusal.record_id).await.unwrap();
        let mut t = given.clone();
        t.record = other.record.clone();
        assert!(verify_receipt(&t, &consent_key, ledger.verifier_key()).is_err());
        let mut t = given.clone();
        t.proof = other.proof.clone();
        assert!(verify_receipt(&t, &consent_key, ledger.verifier_key()).is_err());
        let mut t = given.clone();
        let mut parts: Vec<String> = t.record.split('.').map(str::to_string).collect();
        parts[1] = parts[1].replace('A', "B");
        t.record = parts.join(".");
        assert!(verify_receipt(&t, &consent_key, ledger.verifier_key()).is_err());
        let mut t = given.clone();
        t.state = ConsentState::Withdrawn;
        assert!(verify_receipt(&t, &consent_key, ledger.verifier_key()).is_err());
        let wrong_key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        assert!(verify_receipt(&given, &wrong_key, ledger.verifier_key()).is_err());
    }
}

/// Of two answers to a race, one succeeded and the other is a conflict.
fn one_winner(a: &Result<crate::Receipt, ConsentError>, b: &Result<crate::Receipt, ConsentError>) {
    assert_eq!(a.is_ok() as u8 + b.is_ok() as u8, 1, "{a:?} {b:?}");
    assert!(
        matches!(
            a.as_ref().err().or(b.as_ref().err()),
            Some(ConsentError::Conflict(_))
        ),
        "{a:?} {b:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn races_have_one_winner_and_the_loser_is_told() {
    for (c, _, _) in engines("races").await {
        let periodic = approved(&c, Access::Periodic).await;
        let once = approved(&c, Access::OneTime).await;
        // A form sent twice: one consent in force, the other answer a conflict.
        let (a, b) = tokio::join!(
            c.answer(&periodic, "person:1", true, "citizen"),
            c.answer(&periodic, "person:1", true, "citizen"),
        );
        one_winner(&a, &b);
        let given = a.or(b).unwrap();
        // Two changes at once: one wins, the other is a conflict (not a failure).
        let (a, b) = tokio::join!(
            c.change(&given.record_id, "person:1", Change::Withdraw, "citizen"),
            c.change(&given.record_id, "person:1", Change::Pause, "citizen"),
        );
        one_winner(&a, &b);
        // A one-time consent: of two releases at once, one; and never a release that a
        // withdrawal at the same moment did not see.
        let one = c.answer(&once, "person:2", true, "citizen").await.unwrap();
        let (a, b) = tokio::join!(
            c.start_release(&one.record_id, "bank-app", "person:2"),
            c.start_release(&one.record_id, "bank-app", "person:2"),
        );
        let released = [a.unwrap().0.valid, b.unwrap().0.valid];
        assert_eq!(released.iter().filter(|v| **v).count(), 1, "{released:?}");
        let two = c.answer(&once, "person:3", true, "citizen").await.unwrap();
        let (release, withdraw) = tokio::join!(
            c.start_release(&two.record_id, "bank-app", "person:3"),
            c.change(&two.record_id, "person:3", Change::Withdraw, "citizen"),
        );
        assert!(
            !(release.unwrap().0.valid && withdraw.is_ok()),
            "released and withdrawn both"
        );
        // Someone else's consent is not released.
        let three = c.answer(&once, "person:4", true, "citizen").await.unwrap();
        assert!(matches!(
            c.start_release(&three.record_id, "bank-app", "person:5")
                .await,
            Err(ConsentError::NotFound(_))
        ));
    }
}
