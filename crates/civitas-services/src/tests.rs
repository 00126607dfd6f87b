//! The catalogue, forms, search and the case workflow against a real database: SQLite
//! always, PostgreSQL when `CIVITAS_TEST_POSTGRES_URL` names a server.

use civitas_ledger::Ledger;
use serde_json::{Map, Value, json};

use crate::cases::DAY_MS;
use crate::{
    Action, Actor, Applicant, CaseState, Catalog, QueueFilter, Services, ServicesError, StaffRole,
};

const CATALOG: &str = r#"
[[service]]
id = "sell-tax"
agency = "TXA"
name = { zh = "土地增值稅申報", en = "Land value increment tax return" }
summary = { zh = "出售土地時申報土地增值稅。", en = "Declare the tax on a sale of land." }
eligibility = { zh = "土地所有權人", en = "Owners of land" }
legal_basis = { zh = "土地稅法第49條", en = "Land Tax Act art. 49" }
sla_days = 7
loa = "substantial"
keywords = ["增值稅", "賣房"]
declaration = { zh = "我聲明以上屬實。", en = "I declare this is true." }
[[service.step]]
id = "sale"
title = { zh = "買賣", en = "The sale" }
[[service.step.question]]
id = "seller.name"
kind = "name"
label = { zh = "姓名", en = "Name" }
required = true
prefill = "population.name"
prefill_format = "{family_name}{given_name}"
[[service.step.question]]
id = "property.building"
kind = "select"
label = { zh = "建物", en = "Building" }
required = true
options_from = "land.buildings"
option_value = "{building_no}"
option_label = "{street_zh}"
[[service.step.question]]
id = "sale.price"
kind = "number"
label = { zh = "價格", en = "Price" }
required = true
min = 1
[[service.step.question]]
id = "sale.date"
kind = "date"
label = { zh = "日期", en = "Date" }
required = true
when = "past"
[[service.step.question]]
id = "buyer.id"
kind = "national_id"
label = { zh = "買方身分證", en = "Buyer's national ID" }
required = true
[[service.step.question]]
id = "sale.agent"
kind = "select"
label = { zh = "代理人", en = "Agent" }
options = [{ value = "no", label = { zh = "否", en = "No" } }, { value = "yes", label = { zh = "是", en = "Yes" } }]
[[service.step.question]]
id = "sale.agent_name"
kind = "text"
label = { zh = "代理人姓名", en = "Agent's name" }
required = true
show_if = { question = "sale.agent", any_of = ["yes"] }

[[service]]
id = "sell-pay"
agency = "TXA"
name = { zh = "繳納稅款", en = "Pay the tax" }
summary = { zh = "繳納土地增值稅。", en = "Pay the land value increment tax." }
eligibility = { zh = "已申報者", en = "Those who declared" }
legal_basis = { zh = "土地稅法", en = "Land Tax Act" }
sla_days = 3
loa = "substantial"
declaration = { zh = "我聲明以上屬實。", en = "I declare this is true." }
[[service.step]]
id = "pay"
title = { zh = "繳納", en = "Payment" }
[[service.step.question]]
id = "property.building"
kind = "select"
label = { zh = "建物", en = "Building" }
required = true
options_from = "land.buildings"
option_value = "{building_no}"
option_label = "{street_zh}"
[[service.step.question]]
id = "pay.method"
kind = "select"
label = { zh = "方式", en = "Method" }
required = true
options = [{ value = "bank", label = { zh = "轉帳", en = "Bank transfer" } }]

[[service]]
id = "sell-register"
agency = "DLA"
name = { zh = "移轉登記", en = "Transfer registration" }
summary = { zh = "辦理所有權移轉登記。", en = "Register the transfer of ownership." }
eligibility = { zh = "買賣雙方", en = "Seller and buyer" }
legal_basis = { zh = "土地登記規則", en = "Regulations of Land Registration" }
sla_days = 5
loa = "substantial"
declaration = { zh = "我聲明以上屬實。", en = "I declare this is true." }
[[service.step]]
id = "transfer"
title = { zh = "移轉", en = "Transfer" }
[[service.step.question]]
id = "buyer.id"
kind = "national_id"
label = { zh = "買方身分證", en = "Buyer's national ID" }
required = true
[[service.step.question]]
id = "transfer.owners"
kind = "group"
label = { zh = "共有人", en = "Co-owners" }
max_items = 2
[[service.step.question.field]]
id = "name"
kind = "name"
label = { zh = "姓名", en = "Name" }
required = true

[[life_event]]
id = "selling"
name = { zh = "出售房地產", en = "Selling a property" }
summary = { zh = "申報、繳稅、移轉登記，一次申請。", en = "Declare, pay and register, in one application." }
keywords = ["賣房子", "過戶"]
declaration = { zh = "我聲明以上屬實。", en = "I declare this is true." }
[[life_event.step]]
service = "sell-tax"
[[life_event.step]]
service = "sell-pay"
after = ["sell-tax"]
[[life_event.step]]
service = "sell-register"
after = ["sell-pay"]

[[life_event]]
id = "both"
name = { zh = "兩者", en = "Both first" }
summary = { zh = "先兩步，再一步。", en = "Two steps, then one." }
declaration = { zh = "我聲明以上屬實。", en = "I declare this is true." }
[[life_event.step]]
service = "sell-tax"
[[life_event.step]]
service = "sell-pay"
[[life_event.step]]
service = "sell-register"
after = ["sell-tax", "sell-pay"]
"#;

async fn engines(name: &str) -> Vec<(Services, Ledger)> {
    let mut out = Vec::new();
    for (db, ledger) in civitas_ledger::testing::ledgers_on_both_engines(
        &format!("services-{name}"),
        &[crate::COMPONENT],
    )
    .await
    {
        let s = Services::open(db, ledger.clone()).await.unwrap();
        s.load_catalog(CATALOG, "operator:test").await.unwrap();
        out.push((s, ledger));
    }
    out
}

fn applicant() -> Applicant {
    Applicant {
        account_id: "acc-1".into(),
        subject_ref: "person:1".into(),
        national_id: "A123456789".into(),
        name: "王小明".into(),
    }
}

fn staff(agency: &str, role: StaffRole, id: &str) -> Actor {
    Actor::Staff {
        account_id: id.into(),
        name: format!("{agency} {id}"),
        agency: agency.into(),
        role,
    }
}

fn prefilled() -> Map<String, Value> {
    json!({
        "population.name": {"value": {"family_name": "王", "given_name": "小明"}, "source": "TW/GOV/HRO/registry/population", "source_name": "Population register", "retrieved_at": 1},
        "land.buildings": {"value": [{"building_no": "B-1", "street_zh": "中正路1號"}], "source": "TW/GOV/DLA/registry/land", "source_name": "Land register", "retrieved_at": 1},
    })
    .as_object()
    .unwrap()
    .clone()
}

fn answers(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

const TODAY: &str = "2026-11-23";

/// Starts the selling bundle and fills every step correctly.
async fn filled(s: &Services) -> crate::Application {
    let a = s
        .start("selling", &applicant(), &prefilled())
        .await
        .unwrap();
    let form = s.form("selling").unwrap();
    let ids: Vec<String> = form.steps.iter().map(|st| st.id.clone()).collect();
    assert_eq!(
        ids,
        ["sell-tax.sale", "sell-pay.pay", "sell-register.transfer"]
    );
    let (_, e) = s
        .save_step(
            &a.id,
            "acc-1",
            "sell-tax.sale",
            answers(json!({"seller.name": "王小明", "property.building": "B-1", "sale.price": "8000000", "sale.date": "2026-11-01", "buyer.id": "A123456789", "sale.agent": "no"})),
            TODAY,
        )
        .await
        .unwrap();
    assert!(e.is_empty(), "{e:?}");
    s.save_step(
        &a.id,
        "acc-1",
        "sell-pay.pay",
        answers(json!({"pay.method": "bank"})),
        TODAY,
    )
    .await
    .unwrap();
    let (a, e) = s
        .save_step(
            &a.id,
            "acc-1",
            "sell-register.transfer",
            answers(json!({"transfer.owners": [{"name": "李四"}]})),
            TODAY,
        )
        .await
        .unwrap();
    assert!(e.is_empty(), "{e:?}");
    a
}

#[test]
fn catalogues_are_checked_whole() {
    assert!(Catalog::parse(CATALOG).is_ok());
    let demo = Catalog::parse(crate::catalog::DEMO).unwrap();
    for id in [
        "baby-born",
        "gold-card",
        "selling-property",
        "licence-renewal",
    ] {
        assert!(demo.life_event(id).is_some(), "{id}");
    }
    let bad = [
        (
            CATALOG.replace("id = \"sell-pay\"", "id = \"sell-tax\""),
            "defined twice",
        ),
        (
            CATALOG.replace("after = [\"sell-pay\"]", "after = [\"sell-nothing\"]"),
            "not an earlier step",
        ),
        (CATALOG.replace("sla_days = 3", "sla_days = 0"), "sla_days"),
        (
            CATALOG.replacen(
                "option_label = \"{street_zh}\"",
                "option_label = \"{street_en}\"",
                1,
            ),
            "differs between",
        ),
        (
            CATALOG.replace("any_of = [\"yes\"]", "any_of = [\"yes\"], unknown = 1"),
            "unknown field",
        ),
        (
            CATALOG.replace("question = \"sale.agent\"", "question = \"pay.method\""),
            "not asked before",
        ),
    ];
    for (text, why) in bad {
        let e = Catalog::parse(&text).unwrap_err().to_string();
        assert!(e.contains(why), "{why}: {e}");
    }
}

#[tokio::test]
async fn uploads_are_kept_per_application_and_read_back_only_by_it() {
    let dir = civitas_store::scratch::folder("uploads");
    let s = engines("uploads").await.remove(0).0;
    let s = s.with_uploads(crate::uploads::local_store(&dir).unwrap());
    let (mine, other) = (
        "3f2b8c1e-0000-4000-8000-000000000001",
        "3f2b8c1e-0000-4000-8000-000000000002",
    );
    let doc = s
        .put_upload(mine, "a.pdf", "application/pdf", b"%PDF-1.7".to_vec())
        .await
        .unwrap();
    let key = doc["key"].as_str().unwrap();
    // In one of 256 folders, not a folder per application.
    assert!(key.starts_with(&format!("3f/{mine}.")), "{key}");
    assert_eq!(s.get_upload(mine, key).await.unwrap(), b"%PDF-1.7");
    assert!(matches!(
        s.get_upload(other, key).await,
        Err(ServicesError::NotFound(_))
    ));
    // A key made before the folders still reads; one that climbs out does not.
    assert!(crate::uploads::is_key_of(mine, &format!("{mine}/x")));
    assert!(!crate::uploads::is_key_of(
        mine,
        &format!("{mine}/../{other}/x")
    ));
    assert!(!crate::uploads::is_key_of(other, key));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn search_cuts_chinese_into_words() {
    let c = Catalog::parse(CATALOG).unwrap();
    let ix = crate::search::Index::build(&c);
    let found = |q: &str| ix.search(q).into_iter().map(|h| h.id).collect::<Vec<_>>();
    assert_eq!(found("賣房子").first().map(String::as_str), Some("selling"));
    assert!(found("增值稅").contains(&"sell-tax".to_string()));
    assert!(found("移轉登記").contains(&"sell-register".to_string()));
    assert!(found("transfer").contains(&"sell-register".to_string()));
    // Whole words, not substrings: these characters sit inside words but are no word.
    assert!(found("值稅申").is_empty(), "{:?}", found("值稅申"));
    assert!(found("zzz").is_empty());
}

#[tokio::test]
async fn forms_check_each_kind_and_keep_what_was_typed() {
    for (s, _) in engines("forms").await {
        let a = s
            .start("selling", &applicant(), &prefilled())
            .await
            .unwrap();
        // Prefilled from the registers, with the source.
        assert_eq!(a.answers["seller.name"], "王小明");
        assert_eq!(a.source_of("seller.name").unwrap().item, "population.name");
        let (a, errors) = s
            .save_step(
                &a.id,
                "acc-1",
                "sell-tax.sale",
                answers(json!({"seller.name": "王小明", "property.building": "B-9", "sale.price": "0", "sale.date": "2099-01-01", "buyer.id": "A123456788", "sale.agent": "yes"})),
                TODAY,
            )
            .await
            .unwrap();
        let wrong: Vec<&str> = errors.iter().map(|e| e.question.as_str()).collect();
        assert_eq!(
            wrong,
            [
                "sale.price",
                "sale.date",
                "buyer.id",
                "sale.agent_name",
                "property.building"
            ]
        );
        // What was typed is kept, wrong or not.
        assert_eq!(a.answers["sale.price"], "0");
        let again = s.application_of(&a.id, "acc-1").await.unwrap();
        assert_eq!(again.answers["buyer.id"], "A123456788");
        // Someone else's application is not found.
        assert!(matches!(
            s.application_of(&a.id, "acc-2").await,
            Err(ServicesError::NotFound(_))
        ));
        // Submitting with wrong answers is refused with the errors; nothing opens.
        let refused = s.submit(&a.id, "acc-1", TODAY).await.unwrap().unwrap_err();
        assert!(refused.iter().any(|e| e.question == "sale.price"));
        assert!(s.cases_of(&a.id).await.unwrap().is_empty());
        // A group with too many entries, and an entry missing a required field.
        let (_, e) = s
            .save_step(
                &a.id,
                "acc-1",
                "sell-register.transfer",
                answers(json!({"buyer.id": "A123456789", "transfer.owners": [{"name": ""}]})),
                TODAY,
            )
            .await
            .unwrap();
        assert_eq!(e[0].question, "transfer.owners[0].name");
        let (_, e) = s
            .save_step(&a.id, "acc-1", "sell-register.transfer", answers(json!({"buyer.id": "A123456789", "transfer.owners": [{"name": "a"}, {"name": "b"}, {"name": "c"}]})), TODAY)
            .await
            .unwrap();
        assert_eq!(e[0].question, "transfer.owners");
        // A correction request goes to the register's agency and the ledger, and only
        // for a value a register gave.
        s.request_correction(&a.id, "acc-1", "seller.name", "My name is 王曉明")
            .await
            .unwrap();
        assert!(
            s.request_correction(&a.id, "acc-1", "sale.price", "x")
                .await
                .is_err()
        );
        assert_eq!(s.corrections(&a.id).await.unwrap()[0].0, "population.name");
    }
}

#[tokio::test]
async fn a_chain_opens_step_by_step_and_a_refusal_closes_the_rest() {
    for (s, ledger) in engines("chain").await {
        let a = filled(&s).await;
        let (a, opened) = s.submit(&a.id, "acc-1", TODAY).await.unwrap().unwrap();
        assert_eq!(a.state, crate::ApplicationState::Submitted);
        let states: Vec<CaseState> = opened.iter().map(|c| c.state).collect();
        assert_eq!(
            states,
            [CaseState::Submitted, CaseState::Waiting, CaseState::Waiting]
        );
        // Answers an agency sees are its own service's only.
        let dla = &opened[2];
        let seen = s.answers_for(dla, &a);
        assert!(seen.contains_key("buyer.id") && !seen.contains_key("sale.price"));
        // Another agency cannot see or act on the case.
        let txa = staff("TXA", StaffRole::Caseworker, "t1");
        let other = staff("DLA", StaffRole::Supervisor, "d1");
        assert!(matches!(
            s.act(&opened[0].id, &other, Action::Take).await,
            Err(ServicesError::NotFound(_))
        ));
        // A caseworker cannot assign to others; an impossible step is a conflict.
        let assign = Action::Assign {
            account_id: "t2".into(),
            name: "t2".into(),
        };
        assert!(matches!(
            s.act(&opened[0].id, &txa, assign).await,
            Err(ServicesError::Forbidden(_))
        ));
        assert!(matches!(
            s.act(&opened[0].id, &txa, Action::Close).await,
            Err(ServicesError::Conflict(_))
        ));
        assert!(matches!(
            s.act(
                &opened[0].id,
                &txa,
                Action::Reject {
                    reason: " ".trim().into()
                }
            )
            .await,
            Err(ServicesError::Invalid(_))
        ));
        // Take, review, approve: the payment step opens with its own due date.
        s.act(&opened[0].id, &txa, Action::Take).await.unwrap();
        s.act(&opened[0].id, &txa, Action::StartReview)
            .await
            .unwrap();
        let changed = s
            .act(
                &opened[0].id,
                &txa,
                Action::Approve {
                    reason: String::new(),
                },
            )
            .await
            .unwrap();
        assert_eq!(changed.len(), 2);
        assert_eq!(changed[1].state, CaseState::Submitted);
        assert!(changed[1].due_ms.unwrap() - changed[1].opened_ms.unwrap() == 3 * DAY_MS);
        // The queue shows the open case; the first is decided and gone from it.
        let q = s.queue("TXA", &QueueFilter::default()).await.unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].reference, a.reference);
        // The payment is refused: registration can no longer go ahead and is closed.
        let changed = s
            .act(
                &opened[1].id,
                &txa,
                Action::Reject {
                    reason: "Not paid".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(changed.len(), 2);
        assert_eq!(changed[1].state, CaseState::Closed);
        let cases = s.cases_of(&a.id).await.unwrap();
        let states: Vec<CaseState> = cases.iter().map(|c| c.state).collect();
        assert_eq!(
            states,
            [CaseState::Approved, CaseState::Rejected, CaseState::Closed]
        );
        // The timeline has every change across agencies, with the refusal's reason.
        let t = s.timeline(&a.id).await.unwrap();
        assert!(
            t.iter()
                .any(|e| e.to == CaseState::Rejected && e.note.as_deref() == Some("Not paid"))
        );
        assert_eq!(t.iter().filter(|e| e.agency == "DLA").count(), 2);
        // The ledger holds the submission and each change, under the applicant's tag.
        let tag = ledger.subject_secret("person:1").await.unwrap().tag();
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let events = ledger.subject_events(tag).await.unwrap();
        let kinds: Vec<&str> = events.iter().map(|(_, e)| e.kind.as_str()).collect();
        assert!(
            kinds.contains(&"services.application_submitted"),
            "{kinds:?}"
        );
        assert!(
            kinds
                .iter()
                .filter(|k| **k == "services.case_changed")
                .count()
                >= 8,
            "{kinds:?}"
        );
        // Nothing more can be withdrawn once every step is decided.
        assert!(matches!(
            s.withdraw(&a.id, "acc-1").await,
            Err(ServicesError::Conflict(_))
        ));
    }
}

#[tokio::test]
async fn a_refused_first_step_closes_every_step_after_it() {
    for (s, ledger) in engines("first").await {
        let a = filled(&s).await;
        let (a, opened) = s.submit(&a.id, "acc-1", TODAY).await.unwrap().unwrap();
        let txa = staff("TXA", StaffRole::Caseworker, "t1");
        let changed = s
            .act(
                &opened[0].id,
                &txa,
                Action::Reject {
                    reason: "Not the owner".into(),
                },
            )
            .await
            .unwrap();
        // The payment waited for the declaration, the registration for the payment: both
        // are closed at once, in the same transaction.
        let states: Vec<CaseState> = changed.iter().map(|c| c.state).collect();
        assert_eq!(
            states,
            [CaseState::Rejected, CaseState::Closed, CaseState::Closed]
        );
        assert!(
            changed[1..]
                .iter()
                .all(|c| c.outcome() == Some(false) && c.due_ms.is_none())
        );
        // Nobody can act on a closed step; the applicant has nothing left to withdraw.
        let dla = staff("DLA", StaffRole::Supervisor, "d1");
        assert!(matches!(
            s.act(
                &opened[2].id,
                &dla,
                Action::Approve {
                    reason: String::new()
                }
            )
            .await,
            Err(ServicesError::Conflict(_))
        ));
        assert!(matches!(
            s.withdraw(&a.id, "acc-1").await,
            Err(ServicesError::Conflict(_))
        ));
        // Each closing is in the ledger under the applicant's tag.
        let tag = ledger.subject_secret("person:1").await.unwrap().tag();
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let closed = ledger
            .subject_events(tag)
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, e)| {
                e.kind == "services.case_changed"
                    && e.public.get("to").and_then(|v| v.as_str()) == Some("closed")
            })
            .count();
        assert_eq!(closed, 2);
    }
}

#[tokio::test]
async fn a_draft_the_platform_cannot_stand_behind_is_discarded_by_it_not_by_the_applicant() {
    for (s, ledger) in engines("discard").await {
        let draft = s
            .start("selling", &applicant(), &prefilled())
            .await
            .unwrap();
        s.discard_draft(&draft.id, "its register reads could not be logged")
            .await
            .unwrap();
        let now = s.application(&draft.id).await.unwrap().unwrap();
        assert_eq!(now.state, crate::ApplicationState::Withdrawn);
        // A sent application is left alone.
        let sent = filled(&s).await;
        s.submit(&sent.id, "acc-1", TODAY).await.unwrap().unwrap();
        s.discard_draft(&sent.id, "no").await.unwrap();
        let sent = s.application(&sent.id).await.unwrap().unwrap();
        assert_eq!(sent.state, crate::ApplicationState::Submitted);
        let tag = ledger.subject_secret("person:1").await.unwrap().tag();
        let discarded: Vec<_> = ledger
            .subject_events(tag)
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, e)| e.kind == "services.application_discarded")
            .collect();
        assert_eq!(discarded.len(), 1);
        assert_eq!(discarded[0].1.actor, "system");
    }
}

#[tokio::test]
async fn more_information_reopens_the_form_and_withdrawal_ends_the_rest() {
    for (s, _) in engines("more").await {
        let a = filled(&s).await;
        let (_, opened) = s.submit(&a.id, "acc-1", TODAY).await.unwrap().unwrap();
        // A sent application cannot be changed...
        let step = ("sell-pay.pay", answers(json!({"pay.method": "bank"})));
        assert!(matches!(
            s.save_step(&a.id, "acc-1", step.0, step.1.clone(), TODAY)
                .await,
            Err(ServicesError::Conflict(_))
        ));
        let txa = staff("TXA", StaffRole::Supervisor, "t1");
        s.act(
            &opened[0].id,
            &txa,
            Action::RequestInformation {
                note: "Upload the contract".into(),
            },
        )
        .await
        .unwrap();
        // ...until an agency asks for more.
        s.save_step(&a.id, "acc-1", step.0, step.1, TODAY)
            .await
            .unwrap();
        let back = s.resubmit(&a.id, "acc-1", TODAY).await.unwrap().unwrap();
        assert_eq!(back[0].state, CaseState::Submitted);
        assert!(s.resubmit(&a.id, "acc-1", TODAY).await.is_err());
        // Withdrawing ends every case not decided.
        let changed = s.withdraw(&a.id, "acc-1").await.unwrap();
        assert_eq!(changed.len(), 3);
        assert!(changed.iter().all(|c| c.state == CaseState::Withdrawn));
        assert!(matches!(
            s.act(
                &opened[0].id,
                &txa,
                Action::Approve {
                    reason: String::new()
                }
            )
            .await,
            Err(ServicesError::Conflict(_))
        ));
    }
}

#[tokio::test]
async fn a_step_waiting_for_two_opens_when_both_are_approved_even_if_one_was_closed() {
    for (s, _) in engines("both").await {
        let mut a = s.start("both", &applicant(), &prefilled()).await.unwrap();
        let given = answers(
            json!({"seller.name": "王小明", "property.building": "B-1", "sale.price": "1", "sale.date": "2026-11-01", "buyer.id": "A123456789", "sale.agent": "no", "pay.method": "bank"}),
        );
        a = s
            .save_answers(&a.id, "acc-1", &given, TODAY)
            .await
            .unwrap()
            .0;
        let (_, opened) = s.submit(&a.id, "acc-1", TODAY).await.unwrap().unwrap();
        let states: Vec<CaseState> = opened.iter().map(|c| c.state).collect();
        assert_eq!(
            states,
            [
                CaseState::Submitted,
                CaseState::Submitted,
                CaseState::Waiting
            ]
        );
        let txa = staff("TXA", StaffRole::Caseworker, "t1");
        s.act(
            &opened[0].id,
            &txa,
            Action::Approve {
                reason: String::new(),
            },
        )
        .await
        .unwrap();
        // Closing the approved case keeps its decision.
        s.act(&opened[0].id, &txa, Action::Close).await.unwrap();
        assert_eq!(
            s.case(&opened[2].id).await.unwrap().unwrap().state,
            CaseState::Waiting
        );
        let changed = s
            .act(
                &opened[1].id,
                &txa,
                Action::Approve {
                    reason: String::new(),
                },
            )
            .await
            .unwrap();
        assert_eq!(changed[1].state, CaseState::Submitted, "{changed:?}");
        let closed = s.case(&opened[0].id).await.unwrap().unwrap();
        assert_eq!(
            (closed.state, closed.outcome()),
            (CaseState::Closed, Some(true))
        );
        // A withdrawal after that ends only what is undecided.
        let w = s.withdraw(&a.id, "acc-1").await.unwrap();
        assert_eq!(w.len(), 1);
    }
}

#[tokio::test]
async fn when_an_agency_asks_for_more_only_its_questions_change() {
    for (s, _) in engines("scope").await {
        let a = s.start("both", &applicant(), &prefilled()).await.unwrap();
        let given = answers(
            json!({"seller.name": "王小明", "property.building": "B-1", "sale.price": "1", "sale.date": "2026-11-01", "buyer.id": "A123456789", "sale.agent": "no", "pay.method": "bank", "transfer.owners": []}),
        );
        s.save_answers(&a.id, "acc-1", &given, TODAY).await.unwrap();
        let (_, opened) = s.submit(&a.id, "acc-1", TODAY).await.unwrap().unwrap();
        let txa = staff("TXA", StaffRole::Caseworker, "t1");
        // The payment step is in review; the declaration asks for more.
        s.act(&opened[1].id, &txa, Action::StartReview)
            .await
            .unwrap();
        s.act(
            &opened[0].id,
            &txa,
            Action::RequestInformation {
                note: "price?".into(),
            },
        )
        .await
        .unwrap();
        let a = s.application(&a.id).await.unwrap().unwrap();
        let only = s.editable_questions(&a).await.unwrap().unwrap();
        assert!(
            only.contains("sale.price") && !only.contains("pay.method"),
            "{only:?}"
        );
        // property.building is the payment's too, which is in review: it stays.
        assert!(!only.contains("property.building"));
        let (a, _) = s
            .save_answers(
                &a.id,
                "acc-1",
                &answers(
                    json!({"sale.price": "2", "pay.method": "card", "property.building": "B-9"}),
                ),
                TODAY,
            )
            .await
            .unwrap();
        assert_eq!(
            (
                a.answers["sale.price"].as_str(),
                a.answers["pay.method"].as_str()
            ),
            (Some("2"), Some("bank"))
        );
        assert_eq!(a.answers["property.building"], "B-1");
        // A stale write (read before this change) is refused, not silently applied.
        let mut stale = a.clone();
        stale.updated_ms -= 1;
        assert!(matches!(
            s.store_answers(&mut stale).await,
            Err(ServicesError::Conflict(_))
        ));
    }
}

#[tokio::test]
async fn missed_dates_remind_then_escalate_once() {
    for (s, _) in engines("deadlines").await {
        let a = filled(&s).await;
        let (_, opened) = s.submit(&a.id, "acc-1", TODAY).await.unwrap().unwrap();
        let due = opened[0].due_ms.unwrap();
        assert!(
            s.check_deadlines(due - 2 * DAY_MS)
                .await
                .unwrap()
                .is_empty()
        );
        let d = s.check_deadlines(due - DAY_MS / 2).await.unwrap();
        assert_eq!((d.len(), d[0].escalated), (1, false));
        assert!(
            s.check_deadlines(due - DAY_MS / 3)
                .await
                .unwrap()
                .is_empty(),
            "reminded once"
        );
        let d = s.check_deadlines(due + 1).await.unwrap();
        assert_eq!((d.len(), d[0].escalated), (1, true));
        assert!(
            s.check_deadlines(due + 2).await.unwrap().is_empty(),
            "escalated once"
        );
        let f = QueueFilter {
            escalated: true,
            ..Default::default()
        };
        assert_eq!(s.queue("TXA", &f).await.unwrap().len(), 1);
        let f = QueueFilter {
            overdue_at: Some(due + 1),
            ..Default::default()
        };
        assert_eq!(s.queue("TXA", &f).await.unwrap().len(), 1);
        assert!(
            s.queue("DLA", &QueueFilter::default())
                .await
                .unwrap()
                .is_empty()
        );
    }
}
