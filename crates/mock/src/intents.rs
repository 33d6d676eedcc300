//! A labelled intent data set the project builds itself, so tests need no data from outside the repository.
//!
//! Thirty banking intents, each phrased by several templates whose slots (cards, amounts, times, merchants,
//! countries) and whose openings and closings vary, the way customers write. The set is the same on every
//! machine and every run: which combinations are kept is fixed by a stable hash, not by a random generator
//! whose stream may change between versions. Rows come in an order fixed by a hash of their text, so any
//! prefix or stride of the set mixes every intent.
//!
//! Real public data (Banking77 and the others) stays for the benchmarks under `bench/`.

use std::collections::HashSet;

/// How many queries each intent gets.
pub const PER_INTENT: usize = 100;

/// `(intent, templates)`: `{card}`, `{amount}`, `{time}`, `{merchant}`, `{country}` are slots.
const INTENTS: &[(&str, &[&str])] = &[
    (
        "card_arrival",
        &[
            "I ordered a {card} {time} and it still hasn't arrived.",
            "When will my {card} be delivered?",
            "How long does it take for a {card} to arrive?",
            "My {card} was supposed to come {time}, where is it?",
            "Can I track the delivery of my {card}?",
            "still waiting on the {card} I requested {time}",
        ],
    ),
    (
        "lost_or_stolen_card",
        &[
            "I lost my {card} {time}, what should I do?",
            "Someone stole my {card} at {merchant}.",
            "My {card} is missing and I think it was stolen {time}.",
            "I can't find my {card} anywhere, please cancel it.",
            "I left my {card} in {country} and need to report it lost.",
            "how do I report a stolen {card}",
        ],
    ),
    (
        "activate_my_card",
        &[
            "How do I activate my {card}?",
            "My {card} arrived {time}, how can I start using it?",
            "The app won't let me activate the {card}.",
            "What are the steps to turn on a {card}?",
            "activate {card} please, it came {time}",
            "Is there a code I need to activate my {card}?",
        ],
    ),
    (
        "change_pin",
        &[
            "How can I change the PIN on my {card}?",
            "I want a new PIN for my {card}.",
            "Can I reset my PIN at an ATM in {country}?",
            "I forgot the PIN of my {card}, how do I set another one?",
            "change pin on {card}",
            "Where in the app do I update my {card} PIN?",
        ],
    ),
    (
        "balance_not_updated",
        &[
            "My balance didn't update after I paid {amount} {time}.",
            "I deposited {amount} {time} but my balance is the same.",
            "Why hasn't my balance changed since {time}?",
            "The {amount} I sent myself is not showing in my balance.",
            "balance still wrong after the {amount} transfer {time}",
            "My account balance looks outdated, I added {amount} {time}.",
        ],
    ),
    (
        "pending_transfer",
        &[
            "My transfer of {amount} to {country} has been pending since {time}.",
            "Why is my transfer still pending?",
            "I sent {amount} {time} and it still says pending.",
            "How long do transfers stay pending?",
            "transfer of {amount} stuck on pending since {time}",
            "The money I sent to a friend in {country} is still pending.",
        ],
    ),
    (
        "failed_transfer",
        &[
            "My transfer of {amount} failed {time}.",
            "Why did my transfer to {country} not go through?",
            "I tried to send {amount} but the transfer was declined.",
            "The transfer I made {time} bounced back, why?",
            "transfer failed again, {amount} to my landlord",
            "What happens to my money when a transfer to {country} fails?",
        ],
    ),
    (
        "request_refund",
        &[
            "I want a refund for the {amount} I paid at {merchant}.",
            "How do I get my money back from {merchant}?",
            "{merchant} promised a refund of {amount} {time} and I haven't received it.",
            "Can you help me request a refund for a purchase made {time}?",
            "refund from {merchant} not showing yet",
            "Where is the refund of {amount} I was promised?",
        ],
    ),
    (
        "exchange_rate",
        &[
            "What exchange rate do you use when I pay in {country}?",
            "How much is {amount} in the local currency of {country}?",
            "Is your exchange rate for {country} the real rate?",
            "Why was the exchange rate so bad on my purchase at {merchant}?",
            "current exchange rate for {country} please",
            "Do exchange rates change on weekends for payments in {country}?",
        ],
    ),
    (
        "top_up_failed",
        &[
            "My top up of {amount} failed {time}.",
            "I tried to top up with my {card} but it didn't work.",
            "Why does my top-up keep failing?",
            "The {amount} top up was rejected, what went wrong?",
            "top up not working with {card}",
            "I couldn't add {amount} to my account {time}.",
        ],
    ),
    (
        "direct_debit_payment_not_recognised",
        &[
            "There's a direct debit of {amount} I don't recognise.",
            "Who set up a direct debit from {merchant} on my account?",
            "I see a direct debit {time} that I never agreed to.",
            "Unknown direct debit for {amount}, can you check it?",
            "direct debit from {merchant} that isn't mine",
            "A strange direct debit took {amount} {time}.",
        ],
    ),
    (
        "terminate_account",
        &[
            "I want to close my account.",
            "How do I delete my account and get my {amount} back?",
            "Please cancel my account, I'm moving to {country}.",
            "What do I need to do to terminate my account?",
            "close account asap",
            "Can I shut down my account {time} and keep my {card} history?",
        ],
    ),
    (
        "edit_personal_details",
        &[
            "I moved to {country}, how do I change my address?",
            "How can I update my phone number?",
            "I need to change the name on my account.",
            "My address changed {time}, where do I edit it?",
            "update my personal details please",
            "Can I correct the email address on my profile?",
        ],
    ),
    (
        "verify_my_identity",
        &[
            "Why do I need to verify my identity?",
            "How do I verify my identity with a passport from {country}?",
            "My identity verification failed {time}.",
            "What documents do you accept to confirm who I am?",
            "identity check stuck since {time}",
            "Can I verify my identity without a driving licence?",
        ],
    ),
    (
        "wrong_amount_of_cash_received",
        &[
            "The ATM gave me less cash than I asked for.",
            "I withdrew {amount} but only got part of it.",
            "The cash machine in {country} gave me the wrong amount {time}.",
            "I was charged {amount} at the ATM but received less money.",
            "atm short changed me {time}",
            "The machine only dispensed half of the {amount} I requested.",
        ],
    ),
    (
        "declined_card_payment",
        &[
            "My {card} was declined at {merchant}.",
            "Why was my card payment of {amount} declined {time}?",
            "I tried paying at {merchant} and the {card} didn't work.",
            "My payment keeps getting declined in {country}.",
            "card declined at {merchant} again",
            "Why would my {card} be refused for a {amount} purchase?",
        ],
    ),
    (
        "extra_charge_on_statement",
        &[
            "There's an extra fee of {amount} on my statement.",
            "Why was I charged a fee {time}?",
            "I see a charge from {merchant} that's higher than what I paid.",
            "What is this {amount} fee on my account?",
            "extra charge on statement, didn't expect it",
            "I was charged twice at {merchant} {time}.",
        ],
    ),
    (
        "contactless_not_working",
        &[
            "Contactless isn't working on my {card}.",
            "Why can't I tap to pay at {merchant}?",
            "My {card} only works with chip and PIN, not contactless.",
            "Contactless payment failed {time} in {country}.",
            "tap to pay not working",
            "Is contactless turned off on my {card}?",
        ],
    ),
    (
        "get_disposable_virtual_card",
        &[
            "How do I get a disposable virtual card?",
            "Can I create a single-use card for shopping at {merchant}?",
            "I want a virtual card for online payments.",
            "Where can I make a disposable card in the app?",
            "need a one time virtual card",
            "How many virtual cards can I have at once?",
        ],
    ),
    (
        "card_limit_increase",
        &[
            "Can I raise the spending limit on my {card}?",
            "I need to pay {amount} but my limit is too low.",
            "How do I increase my daily withdrawal limit?",
            "My {card} limit stopped me at {merchant} {time}.",
            "increase limit to {amount}",
            "What is the maximum limit I can set on my {card}?",
        ],
    ),
    (
        "apple_pay_or_google_pay",
        &[
            "How do I add my {card} to Apple Pay?",
            "Google Pay won't accept my {card}.",
            "Can I use Apple Pay in {country}?",
            "My phone wallet stopped working {time}.",
            "set up google pay with {card}",
            "Is Apple Pay supported for my account?",
        ],
    ),
    (
        "request_statement",
        &[
            "How do I download my statement for {time}?",
            "I need a bank statement to send to my landlord.",
            "Can you email me a statement of my account?",
            "Where can I find last month's statement?",
            "statement for tax purposes please",
            "I need an official statement showing my {amount} salary.",
        ],
    ),
    (
        "savings_interest_rate",
        &[
            "What interest rate do you pay on savings?",
            "How much interest would I earn on {amount}?",
            "Did the savings rate change {time}?",
            "Is the interest on my savings paid monthly?",
            "savings interest rate now?",
            "Do you offer a better rate if I save {amount} or more?",
        ],
    ),
    (
        "apply_for_loan",
        &[
            "I'd like to apply for a loan of {amount}.",
            "How do I borrow {amount} to buy a car?",
            "What do I need to get a personal loan?",
            "Can I apply for a loan if I live in {country}?",
            "loan application for {amount}",
            "How long does a loan decision take?",
        ],
    ),
    (
        "report_fraud",
        &[
            "I think someone used my {card} without permission at {merchant}.",
            "There's a payment of {amount} {time} that I didn't make.",
            "I want to report fraud on my account.",
            "Someone in {country} is spending money from my {card}.",
            "fraudulent transaction {amount} at {merchant}",
            "I got a suspicious message asking for my {card} details {time}.",
        ],
    ),
    (
        "add_beneficiary",
        &[
            "How do I add a new payee?",
            "I want to send money to my sister in {country}, how do I add her?",
            "Can I save a beneficiary for regular transfers?",
            "Adding a recipient failed {time}, why?",
            "add new beneficiary",
            "Where do I add a business as a payee to pay {amount}?",
        ],
    ),
    (
        "salary_not_received",
        &[
            "My salary hasn't arrived yet.",
            "My employer paid my salary {time} but I don't see it.",
            "Where is my wage of {amount}?",
            "Why is my salary late this month?",
            "salary missing since {time}",
            "My paycheck from a company in {country} has not come in.",
        ],
    ),
    (
        "cheque_deposit",
        &[
            "How do I deposit a cheque of {amount}?",
            "Can I pay in a cheque with the app?",
            "I deposited a cheque {time}, when will it clear?",
            "Do you accept cheques from banks in {country}?",
            "cheque deposit not showing",
            "My cheque for {amount} was rejected, what now?",
        ],
    ),
    (
        "overdraft",
        &[
            "Can I get an overdraft on my account?",
            "I went overdrawn by {amount} {time}, what are the fees?",
            "How do I increase my overdraft to {amount}?",
            "Why was my overdraft removed?",
            "overdraft charges explained please",
            "Is there interest on an arranged overdraft?",
        ],
    ),
    (
        "card_swallowed",
        &[
            "The ATM swallowed my {card}.",
            "A cash machine in {country} kept my {card} {time}.",
            "My {card} got stuck in the machine, what do I do?",
            "The ATM didn't give my card back after I took out {amount}.",
            "atm ate my {card}",
            "How do I get back a {card} retained by an ATM?",
        ],
    ),
];

const CARDS: &[&str] = &[
    "card",
    "new card",
    "debit card",
    "credit card",
    "replacement card",
    "Visa card",
    "Mastercard",
    "metal card",
];
const AMOUNTS: &[&str] = &[
    "$20",
    "£150",
    "75 euros",
    "1,200 dollars",
    "€40",
    "$3,500",
    "300 pounds",
    "£9.99",
];
const TIMES: &[&str] = &[
    "yesterday",
    "last week",
    "three days ago",
    "this morning",
    "on Monday",
    "two weeks ago",
    "last night",
    "earlier today",
];
const MERCHANTS: &[&str] = &[
    "Amazon",
    "a petrol station",
    "the supermarket",
    "Uber",
    "a hotel",
    "a restaurant",
    "Netflix",
    "the airport",
];
const COUNTRIES: &[&str] = &[
    "Spain",
    "Japan",
    "Canada",
    "Mexico",
    "Germany",
    "France",
    "Italy",
    "Australia",
];
const OPENINGS: &[&str] = &["", "Hi, ", "Hello. ", "Quick question: ", "Please help. ", "Hey, "];
const CLOSINGS: &[&str] = &["", " Thanks.", " Can you help?", " Thank you!", " This is urgent."];

/// Every `(query, intent)` of the set: [`PER_INTENT`] distinct queries per intent, in an order fixed by a
/// stable hash of each query, so that any prefix or stride of the set mixes every intent (a round-robin
/// order would not: every third row of thirty intents is ten of them).
pub fn intents() -> Vec<(String, String)> {
    let mut rows: Vec<(u64, String, String)> = INTENTS
        .iter()
        .flat_map(|(name, templates)| {
            queries(name, templates)
                .into_iter()
                .map(move |q| (crate::labels::fnv(&[q.as_bytes()]), q, (*name).to_owned()))
        })
        .collect();
    rows.sort();
    rows.into_iter().map(|(_, q, label)| (q, label)).collect()
}

/// The set as a `text,category` CSV with a header (the layout [`crate::Labeller::from_csv`] and the mock's
/// `--labels` read).
pub fn intents_csv() -> String {
    let mut out = String::from("text,category\n");
    for (text, label) in intents() {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push_str("\",");
        out.push_str(&label);
        out.push('\n');
    }
    out
}

/// The intent's queries: candidates drawn by a stable hash of (intent, n), kept when new, until there are
/// enough. Each candidate picks a template, slot values, an opening and a closing.
fn queries(intent: &str, templates: &[&str]) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(PER_INTENT);
    let mut n = 0u64;
    while out.len() < PER_INTENT {
        let h = crate::labels::fnv(&[intent.as_bytes(), &n.to_le_bytes()]);
        n += 1;
        let pick = |list: &[&'static str], shift: u32| list[((h >> shift) as usize) % list.len()];
        let template = templates[(h as usize) % templates.len()];
        let body = template
            .replace("{card}", pick(CARDS, 8))
            .replace("{amount}", pick(AMOUNTS, 16))
            .replace("{time}", pick(TIMES, 24))
            .replace("{merchant}", pick(MERCHANTS, 32))
            .replace("{country}", pick(COUNTRIES, 40));
        let opening = pick(OPENINGS, 48);
        let closing = pick(CLOSINGS, 56);
        // An opening lower-cases a body that starts a sentence ("Hi, how do I …"), as people write.
        let body = if opening.is_empty() {
            body
        } else {
            let mut chars = body.chars();
            match chars.next() {
                Some(c) if !body.starts_with("I ") && !body.starts_with("I'") => {
                    c.to_lowercase().chain(chars).collect()
                }
                _ => body,
            }
        };
        let text = format!("{opening}{body}{closing}");
        if seen.insert(text.to_lowercase()) {
            out.push(text);
        }
        assert!(n < 1_000_000, "intent {intent}: too few distinct phrasings");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_is_distinct_mixed_and_stable() {
        let set = intents();
        assert_eq!(set.len(), INTENTS.len() * PER_INTENT);
        let distinct: HashSet<String> = set.iter().map(|(q, _)| q.to_lowercase()).collect();
        assert_eq!(distinct.len(), set.len(), "no query appears twice, whatever its case");
        // The strides and prefixes the tests take cover every intent.
        for (skip, step, take) in [(0, 3, 1000), (1, 10, 240), (0, 5, 600), (0, 20, 150), (0, 1, 300)] {
            let labels: HashSet<&str> = set
                .iter()
                .skip(skip)
                .step_by(step)
                .take(take)
                .map(|(_, l)| l.as_str())
                .collect();
            assert_eq!(labels.len(), INTENTS.len(), "skip {skip}, step {step}, take {take}");
        }
        assert!(set.iter().all(|(q, _)| !q.contains('{')), "every slot is filled");
        assert_eq!(set, intents(), "the same set every time");
    }

    #[test]
    fn the_csv_reads_back_as_the_set() {
        let labeller = crate::Labeller::from_csv(&intents_csv()).unwrap();
        let (q, label) = &intents()[42];
        assert_eq!(labeller.truth(q), Some(label.as_str()));
    }
}
