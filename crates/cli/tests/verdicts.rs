//! Verdicts on tasks that are not classification, with the project's own generated data: maths word
//! problems whose answers reason in different words and formats but come to a value, and delivery answers
//! that read alike but state different facts. The default `validate` must give the verdict the truth gives,
//! or refuse to judge with a reason; a scorer that agrees on different answers must be caught.

mod common;

use common::Env;
use leanlm_mock::{Labeller, Style};
use serde_json::Value;

const MATHS: &str = "Solve the word problem. Show your reasoning, then give the final answer.";
const DELIVERY: &str = "You answer customers' questions about their deliveries, politely and in one sentence.";

/// Logs `n` rows of `rows` through the gateway to `big`, then stops it; returns the task.
fn log(env: &mut Env, rows: &[(String, String)], n: usize) -> String {
    let queries: Vec<String> = rows.iter().take(n).map(|r| r.0.clone()).collect();
    let answers = env.send(&queries, "big", 16);
    assert!(answers.iter().all(|a| a.status == 200));
    env.stop_gateway();
    env.wait_for_calls(n as u64).id
}

fn validate(env: &Env, task: &str, candidate: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec![
        "validate",
        "--task",
        task,
        "--candidate",
        candidate,
        "--seed",
        "7",
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = env.leanlm(&args);
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (code, report)
}

#[test]
fn maths_answers_are_scored_on_their_final_value() {
    let rows = leanlm_mock::word_problems();
    // `big` writes worked solutions ending `#### 1250`; the cheap ones say "The answer is $1,250.00".
    let labeller = Labeller::from_csv(&leanlm_mock::labels_csv(&rows))
        .unwrap()
        .style("big", Style::Worked)
        .style("cheap-90", Style::Casual)
        .style("cheap-99", Style::Casual)
        .accuracy("cheap-90", 0.6)
        .accuracy("cheap-99", 0.99);
    let mut env = Env::start_with("verdicts-maths", 7, labeller, MATHS);
    let task = log(&mut env, &rows, 500);

    // The default scorer reads the value: the 60% candidate fails, the 99% one passes.
    let (code, poor) = validate(&env, &task, "cheap-90", &[]);
    assert_eq!(poor["scorer"], "value", "{poor:#}");
    assert_eq!(code, 2, "{:#}", poor["verdict"]);
    assert_eq!(poor["verdict"]["rule"], "agreement_below");
    // The truth (the cheap model's answers come to the reference's value on 60% of rows) lies within the
    // measured agreement's interval: no false agreement inflating it (similarity on such answers measured
    // 79% where the truth was 59%), whichever calls the sample drew.
    let (low, high) = (
        poor["agreement"]["low"].as_f64().unwrap(),
        poor["agreement"]["high"].as_f64().unwrap(),
    );
    assert!(low <= 0.6 && 0.6 <= high, "{:#}", poor["agreement"]);
    let (code, good) = validate(&env, &task, "cheap-99", &[]);
    assert_eq!(code, 0, "{:#}", good["verdict"]);
    assert_eq!(good["scorer"], "value");
    assert_eq!(
        good["control"]["rate"], 1.0,
        "the reference agrees with itself on values"
    );

    // A pattern that reads the first number (the question's, the same in both answers) agrees on everything;
    // the judge, asked about a sample of its agreements, rejects the wrong ones.
    let (code, fooled) = validate(
        &env,
        &task,
        "cheap-90",
        &["--scorer", r"regex:(\d+)", "--judge-model", "big"],
    );
    assert_eq!(code, 2, "{fooled:#}");
    assert_eq!(
        fooled["verdict"]["rule"], "scorer_unreliable",
        "{:#}",
        fooled["verdict"]
    );
    assert!(
        fooled["agreement"]["rate"].as_f64().unwrap() > 0.95,
        "the pattern agreed on nearly all"
    );
    // On the control run the pattern and the judge agree (the reference agrees with itself either way).
    assert_eq!(
        fooled["control_vs_judge"]["rate"], 1.0,
        "{:#}",
        fooled["control_vs_judge"]
    );
    let check = &fooled["scorer_check"];
    assert_eq!(check["against"], "judge:big");
    let q = check["false_agreement_rate"].as_f64().unwrap();
    assert!((0.15..0.7).contains(&q), "{check:#}");
    assert!(
        fooled["verdict"]["reason"].as_str().unwrap().contains("--scorer value"),
        "{:#}",
        fooled["verdict"]
    );
    // The same pattern on the good candidate: the judge finds few false agreements, and it passes.
    let (code, fine) = validate(
        &env,
        &task,
        "cheap-99",
        &["--scorer", r"regex:(\d+)", "--judge-model", "big"],
    );
    assert_eq!(code, 0, "{fine:#}");
    assert!(fine["scorer_check"]["false_agreement_rate"].as_f64().unwrap() < 0.1);
}

#[test]
fn similar_answers_with_other_facts_do_not_pass_on_similarity() {
    let rows = leanlm_mock::deliveries();
    let labeller = Labeller::from_csv(&leanlm_mock::labels_csv(&rows))
        .unwrap()
        .style("big", Style::Delivery)
        .style("cheap-90", Style::Delivery)
        .accuracy("cheap-90", 0.7);
    let mut env = Env::start_with("verdicts-delivery", 7, labeller, DELIVERY);
    let task = log(&mut env, &rows, 500);

    // Without a judge the default is similarity, checked first on the reference's answers against copies
    // with one fact changed: it often cannot tell "… with DHL … on Tuesday" from "… with UPS … on Tuesday"
    // (it measured 86% agreement here where the truth is 70%), so the verdict does not pass on it: the
    // agreement is under the bound, or the check says the scorer cannot be trusted.
    let (code, report) = validate(&env, &task, "cheap-90", &[]);
    assert_eq!(code, 2, "{report:#}");
    assert!(
        report["scorer"].as_str().unwrap().starts_with("similarity"),
        "{report:#}"
    );
    let rule = report["verdict"]["rule"].as_str().unwrap();
    assert!(
        rule == "scorer_unreliable" || rule == "agreement_below",
        "{:#}",
        report["verdict"]
    );
    assert_eq!(
        report["scorer_check"]["against"], "answers with one fact changed",
        "{report:#}"
    );
    // MiniLM agreed on 64% of them here (32 of 50); ROUGE-L, without the model, on nearly all.
    assert!(
        report["scorer_check"]["false_agreement_rate"].as_f64().unwrap() > 0.3,
        "{report:#}"
    );

    // With a judge configured, free text is judged by it, and the 70% candidate fails on its merits.
    let (code, judged) = validate(&env, &task, "cheap-90", &["--judge-model", "big"]);
    assert_eq!(code, 2, "{judged:#}");
    assert_eq!(judged["scorer"], "judge");
    assert_eq!(judged["verdict"]["rule"], "agreement_below", "{:#}", judged["verdict"]);
}
