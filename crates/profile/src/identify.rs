use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

use leanlm_wire::anthropic::MessagesRequest;
use leanlm_wire::openai::{ChatRequest, Role, Tool};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::mask;
use crate::miner::{Mined, Miner};

pub use leanlm_core::Origin;

/// The task of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Stable id: the client's name for explicit tasks, `t_` + a hash of the template otherwise.
    pub id: String,
    /// A readable automatic name.
    pub name: String,
    pub origin: Origin,
    /// Ids of tasks this one absorbed when its template was mined: calls logged under them belong here.
    pub absorbs: std::sync::Arc<[String]>,
}

impl Identity {
    pub fn explicit(name: &str) -> Identity {
        let name = name.trim();
        Identity {
            id: name.to_owned(),
            name: name.to_owned(),
            origin: Origin::Explicit,
            absorbs: Default::default(),
        }
    }
}

/// The parts of a request that identify its template, in any wire format.
#[derive(Debug, Default)]
pub struct Shape<'a> {
    pub endpoint: &'a str,
    pub system: String,
    pub first_user: String,
    /// Canonical JSON of the tool definitions (names and schemas), if any.
    pub tools: Option<String>,
    /// Canonical JSON of the requested output format, if any.
    pub response_format: Option<String>,
}

impl<'a> Shape<'a> {
    pub fn from_openai(endpoint: &'a str, req: &ChatRequest) -> Shape<'a> {
        let mut system = Vec::new();
        let mut first_user = None;
        for m in &req.messages {
            match m.role {
                Role::System | Role::Developer => system.push(m.content.as_ref().map(|c| c.text()).unwrap_or_default()),
                Role::User if first_user.is_none() => {
                    first_user = Some(m.content.as_ref().map(|c| c.text()).unwrap_or_default())
                }
                _ => {}
            }
        }
        Shape {
            endpoint,
            system: system.join("\n\n"),
            first_user: first_user.unwrap_or_default(),
            tools: req.tools.as_ref().map(|t| {
                let v: Vec<Value> = t
                    .iter()
                    .map(|t| match t {
                        Tool::Function(f) => serde_json::json!([f.name, f.parameters]),
                        Tool::Other(o) => Value::Object(o.clone()),
                    })
                    .collect();
                Value::Array(v).to_string()
            }),
            response_format: req.response_format.as_ref().and_then(|r| serde_json::to_string(r).ok()),
        }
    }

    pub fn from_anthropic(endpoint: &'a str, req: &MessagesRequest) -> Shape<'a> {
        let first_user = req
            .messages
            .iter()
            .find(|m| m.role == leanlm_wire::anthropic::MessageRole::User)
            .map(|m| m.content.text())
            .unwrap_or_default();
        Shape {
            endpoint,
            system: req.system.as_ref().map(|s| s.text()).unwrap_or_default(),
            first_user,
            tools: req.tools.as_ref().map(|t| {
                let v: Vec<Value> = t
                    .iter()
                    .map(|t| serde_json::json!([t.get("name"), t.get("input_schema")]))
                    .collect();
                Value::Array(v).to_string()
            }),
            response_format: None,
        }
    }
}

/// Identities remembered for system-prompt calls; past this the memory is reset.
const CACHE_LIMIT: usize = 4096;

/// A template seen without a system prompt becomes a task of its own once it has framed this many
/// distinct inputs; until then its calls count as chat. One-off prompts with a colon or a quote in them
/// are conversation, not code paths.
const PROMOTE_AFTER: usize = 3;
/// Candidate templates remembered at once; past this the memory is reset (bounded, and rare in practice).
const CANDIDATE_LIMIT: usize = 50_000;

/// Identifies tasks. Shared by all requests; its memory is bounded.
#[derive(Default)]
pub struct Discoverer {
    /// Whole identities of calls with a system prompt, which depend only on the raw system prompt, the
    /// schemas and the endpoint: the common case costs one hash and one lookup.
    known_shapes: Mutex<HashMap<u64, Identity>>,
    hasher: std::collections::hash_map::RandomState,
    /// Templates known to be tasks, loaded from the store at start so ids survive restarts.
    promoted: Mutex<std::collections::HashSet<String>>,
    /// Templates on probation: the hashes of the distinct inputs seen with each.
    candidates: Mutex<HashMap<String, Vec<u64>>>,
    /// Templates mined from the differences between skeletons (names, inline inputs).
    miner: Mutex<Miner>,
    /// Task names clients have given (`X-LeanLM-Task`), at most [`MAX_NAMED`].
    named: Mutex<std::collections::HashSet<String>>,
}

/// The longest task name a client may give.
pub const MAX_NAME_CHARS: usize = 128;
/// Client-named tasks a discoverer takes on; past it, a new name is refused (a name already known is not),
/// so a client cannot make a task per request.
pub const MAX_NAMED: usize = 1_000;

/// Why a task name a client gave is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a task name is at most {MAX_NAME_CHARS} characters")]
    TooLong,
    #[error("a task name may hold letters, digits, spaces and `-_.:/@` only, not {0:?}")]
    Character(char),
    #[error("{MAX_NAMED} client-named tasks exist already: reuse one of their names")]
    TooMany,
}

impl Discoverer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A discoverer that already knows these task ids (from the store).
    pub fn with_known(ids: impl IntoIterator<Item = String>) -> Self {
        let d = Self::default();
        d.promoted.lock().unwrap_or_else(|p| p.into_inner()).extend(ids);
        d
    }

    /// Task names clients gave before (from the store), known from the first call.
    pub fn know_named(&self, names: impl IntoIterator<Item = String>) {
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        named.extend(names.into_iter().take(MAX_NAMED));
    }

    /// The task a client named, checked: a bounded name of plain characters, and a new one only while
    /// fewer than [`MAX_NAMED`] exist.
    pub fn named(&self, name: &str) -> Result<Identity, NameError> {
        let name = name.trim();
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(NameError::TooLong);
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_alphanumeric() || *c == ' ' || "-_.:/@".contains(*c)))
        {
            return Err(NameError::Character(c));
        }
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        if !named.contains(name) {
            if named.len() >= MAX_NAMED {
                return Err(NameError::TooMany);
            }
            named.insert(name.to_owned());
        }
        Ok(Identity::explicit(name))
    }

    /// Whether a system-less template has framed enough distinct inputs to be a task of its own.
    fn promoted(&self, id: &str, input: &str) -> bool {
        if self.promoted.lock().unwrap_or_else(|p| p.into_inner()).contains(id) {
            return true;
        }
        let mut h = self.hasher.build_hasher();
        h.write(input.as_bytes());
        let input = h.finish();
        let mut candidates = self.candidates.lock().unwrap_or_else(|p| p.into_inner());
        if candidates.len() >= CANDIDATE_LIMIT {
            candidates.clear();
        }
        let seen = candidates.entry(id.to_owned()).or_default();
        if !seen.contains(&input) {
            seen.push(input);
        }
        if seen.len() >= PROMOTE_AFTER {
            candidates.remove(id);
            drop(candidates);
            self.promoted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.to_owned());
            return true;
        }
        false
    }

    /// The task of an embeddings call: one per model, as nothing else tells code paths apart.
    pub fn identify_embeddings(&self, model: &str) -> Identity {
        let digest = Sha256::digest(format!("embeddings\0{model}").as_bytes());
        Identity {
            id: format!("t_{}", hex::encode(&digest[..6])),
            name: format!("embeddings-{model}"),
            origin: Origin::Template,
            absorbs: Default::default(),
        }
    }

    /// The task a call belongs to, discovered from its template.
    pub fn identify(&self, shape: &Shape) -> Identity {
        if shape.system.is_empty() {
            return self.discover(shape);
        }
        let mut h = self.hasher.build_hasher();
        for part in [
            shape.endpoint,
            &shape.system,
            shape.tools.as_deref().unwrap_or(""),
            shape.response_format.as_deref().unwrap_or(""),
        ] {
            h.write_usize(part.len());
            h.write(part.as_bytes());
        }
        let key = h.finish();
        if let Some(i) = self.known_shapes.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return i.clone();
        }
        let identity = self.discover(shape);
        let mut known = self.known_shapes.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= CACHE_LIMIT {
            known.clear();
        }
        known.insert(key, identity.clone());
        identity
    }

    fn discover(&self, shape: &Shape) -> Identity {
        let system = if shape.system.is_empty() {
            String::new()
        } else {
            mask::instructions_skeleton(&shape.system)
        };
        let chat = |id: String| {
            let name = if shape.tools.is_some() {
                "chat-with-tools"
            } else {
                "chat"
            };
            Identity {
                id,
                name: name.to_owned(),
                origin: Origin::Chat,
                absorbs: Default::default(),
            }
        };
        if system.is_empty() {
            // Without a system prompt, the user turn may itself be a template wrapping an input: one masking
            // recognises (a labelled or delimited insert), or one the miner finds (an input inline).
            let (user, whole) = mask::skeletons(&head_and_tail(&shape.first_user));
            if mask::is_template(&user) {
                let id = template_id(shape, "", &user);
                if !self.promoted(&id, &shape.first_user) {
                    return chat(template_id(shape, "chat", mask::TEXT));
                }
                return Identity {
                    id,
                    name: readable_name(&user),
                    origin: Origin::Template,
                    absorbs: Default::default(),
                };
            }
            // The miner sees every word: masking a long paragraph as data would hide an instruction that
            // wraps a long input inline.
            let user = whole;
            let chat_id = template_id(shape, "chat", mask::TEXT);
            if !mask::has_fixed_text(&user) {
                return chat(chat_id);
            }
            let (mined, _) = self.mine(shape, "user", &user, &chat_id, true);
            return match mined {
                // The calls before the template was confirmed stay in chat: its id is shared by all chat.
                Mined::Template { text, .. } => Identity {
                    id: template_id(shape, "", &text),
                    name: readable_name(&text),
                    origin: Origin::Template,
                    absorbs: Default::default(),
                },
                Mined::Alone => chat(chat_id),
            };
        }
        // With a system prompt, the instructions are there and the user turn is the input.
        let own = template_id(shape, &system, mask::TEXT);
        let (mined, confirmed) = self.mine(shape, "system", &system, &own, false);
        if confirmed {
            // Identities remembered for the prompts this template absorbed are stale.
            self.known_shapes.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        let (id, basis, absorbs) = match mined {
            Mined::Template { text, absorbs } => (template_id(shape, &text, mask::TEXT), text, absorbs.into()),
            Mined::Alone => (own, system, Default::default()),
        };
        let basis = if mask::has_fixed_text(&basis) {
            basis
        } else {
            mask::skeleton(&head_and_tail(&shape.first_user))
        };
        Identity {
            id,
            name: readable_name(&basis),
            origin: Origin::Template,
            absorbs,
        }
    }

    /// Templates mined since the last call, for the store ([`Discoverer::learn_templates`] reads them back).
    pub fn take_mined(&self) -> Vec<leanlm_core::MinedTemplate> {
        self.miner.lock().unwrap_or_else(|p| p.into_inner()).take_fresh()
    }

    /// Knows templates mined before a restart or by another instance: their calls go to their tasks from
    /// the first one.
    pub fn learn_templates<'a>(&self, templates: impl IntoIterator<Item = &'a leanlm_core::MinedTemplate>) {
        let mut miner = self.miner.lock().unwrap_or_else(|p| p.into_inner());
        for t in templates {
            miner.learn(t);
        }
    }

    /// Runs the miner on a skeleton, in the group of calls that share the endpoint, schemas and part.
    fn mine(&self, shape: &Shape, part: &str, skeleton: &str, id: &str, long_gaps: bool) -> (Mined, bool) {
        let group = {
            let mut h = Sha256::new();
            for p in [
                shape.endpoint,
                part,
                shape.tools.as_deref().unwrap_or(""),
                shape.response_format.as_deref().unwrap_or(""),
            ] {
                h.update((p.len() as u64).to_le_bytes());
                h.update(p.as_bytes());
            }
            let d = h.finalize();
            u64::from_le_bytes(d[..8].try_into().unwrap_or_default())
        };
        self.miner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .mine(group, skeleton, id, long_gaps)
    }
}

/// A template's fixed text sits at the head of a prompt and its last labels at the tail; the middle of a
/// long prompt is inserted data. Masking only the ends bounds the cost of discovery on long prompts.
fn head_and_tail(text: &str) -> std::borrow::Cow<'_, str> {
    const HEAD: usize = 3072;
    const TAIL: usize = 1024;
    if text.len() <= HEAD + TAIL {
        return text.into();
    }
    let mut h = HEAD;
    while !text.is_char_boundary(h) {
        h -= 1;
    }
    let mut t = text.len() - TAIL;
    while !text.is_char_boundary(t) {
        t += 1;
    }
    format!("{}\n\n{}", &text[..h], &text[t..]).into()
}

fn template_id(shape: &Shape, system: &str, user: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        shape.endpoint,
        system,
        user,
        shape.tools.as_deref().unwrap_or(""),
        shape.response_format.as_deref().unwrap_or(""),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    format!("t_{}", hex::encode(&h.finalize()[..6]))
}

const STOPWORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "you",
    "are",
    "is",
    "be",
    "of",
    "to",
    "for",
    "and",
    "or",
    "in",
    "on",
    "at",
    "as",
    "with",
    "your",
    "my",
    "me",
    "i",
    "we",
    "our",
    "this",
    "that",
    "these",
    "those",
    "please",
    "following",
    "given",
    "will",
    "it",
    "its",
    "from",
    "by",
    "into",
    "only",
    "just",
    "who",
    "which",
    "what",
    "helpful",
    "assistant",
    "ai",
    "can",
];

/// Up to five meaningful words of the template, lower-case, joined by dashes.
fn readable_name(skeleton: &str) -> String {
    let fixed = skeleton
        .replace(mask::TEXT, " ")
        .replace(mask::VALUE, " ")
        .replace(mask::NUM, " ");
    let words: Vec<String> = fixed
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 1 && w.chars().all(char::is_alphabetic))
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .take(5)
        .collect();
    if words.is_empty() {
        "task".to_owned()
    } else {
        words.join("-")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openai(body: Value) -> ChatRequest {
        ChatRequest::parse(body.to_string().as_bytes()).unwrap()
    }

    fn id_of(d: &Discoverer, body: Value) -> Identity {
        d.identify(&Shape::from_openai("chat.completions", &openai(body)))
    }

    #[test]
    fn client_task_names_are_bounded() {
        let d = Discoverer::new();
        assert_eq!(d.named(" invoice-extractor ").unwrap().id, "invoice-extractor");
        assert_eq!(d.named(&"x".repeat(MAX_NAME_CHARS + 1)), Err(NameError::TooLong));
        assert_eq!(d.named("a<script>"), Err(NameError::Character('<')));
        assert_eq!(d.named("tab\there"), Err(NameError::Character('\t')));
        assert!(
            d.named("Équipe support: tri/urgent @eu").is_ok(),
            "letters of any script"
        );
        for i in 2..MAX_NAMED {
            d.named(&format!("task {i}")).unwrap();
        }
        assert_eq!(d.named("one too many"), Err(NameError::TooMany));
        assert!(d.named("task 7").is_ok(), "a known name is never refused");
        let restarted = Discoverer::new();
        restarted.know_named(["kept".to_owned()]);
        assert!(restarted.named("kept").is_ok());
    }

    #[test]
    fn calls_of_one_code_path_share_a_task_and_others_do_not() {
        let d = Discoverer::new();
        let classify = |q: &str| {
            serde_json::json!({"model": "m", "messages": [
                {"role": "system", "content": "You are a banking assistant. Classify the customer's message into one intent."},
                {"role": "user", "content": q}]})
        };
        let a = id_of(&d, classify("I lost my card"));
        let b = id_of(&d, classify("How do I top up with a bank transfer? It failed twice."));
        assert_eq!(a, b);
        assert_eq!(a.origin, Origin::Template);
        assert_eq!(a.name, "banking-classify-customer-message-one");

        let translate = |t: &str| serde_json::json!({"model": "m", "messages": [{"role": "user", "content": format!("Translate to French:\n{t}")}]});
        // Without a system prompt, a template is a task once it has framed three distinct inputs.
        let first = id_of(&d, translate("good morning"));
        assert_eq!(first.origin, Origin::Chat);
        assert_eq!(
            id_of(&d, translate("good morning")).origin,
            Origin::Chat,
            "a repeat is not a new input"
        );
        assert_eq!(id_of(&d, translate("where is the station?")).origin, Origin::Chat);
        let c = id_of(&d, translate("two coffees, please"));
        assert_eq!((c.origin, c.name.as_str()), (Origin::Template, "translate-french"));
        assert_eq!(c, id_of(&d, translate("good night")));
        assert_ne!(a.id, c.id);
        // A restarted gateway that loads its known tasks recognises the template at once.
        let restarted = Discoverer::with_known([c.id.clone()]);
        assert_eq!(id_of(&restarted, translate("hello")), c);

        // The same prompt with a schema is another code path.
        let mut with_schema = classify("I lost my card");
        with_schema["response_format"] = serde_json::json!({"type": "json_object"});
        assert_ne!(id_of(&d, with_schema).id, a.id);
    }

    #[test]
    fn per_user_system_prompts_are_one_task() {
        let d = Discoverer::new();
        let users = [
            ("Amara", "Monday", "9:05"),
            ("Bo Chen", "Tuesday", "14:30"),
            ("Carlos", "Friday", "18:00"),
            ("Dmitri Ivanov", "Sunday", "7:45"),
            ("Elif", "Wednesday", "11:11"),
            ("Fatima", "Thursday", "16:20"),
            ("Gao", "Saturday", "22:10"),
            ("Hana", "Monday", "8:00"),
        ];
        let call = |(name, day, time): (&str, &str, &str), q: &str| {
            serde_json::json!({"model": "m", "messages": [
                {"role": "system", "content": format!("You are Aria, the personal assistant of {name}. Today is {day} and the time is {time}. Answer {name}'s questions briefly.")},
                {"role": "user", "content": q}]})
        };
        let ids: Vec<Identity> = users.iter().map(|u| id_of(&d, call(*u, "what's on today?"))).collect();
        let last = ids.last().unwrap().clone();
        assert_eq!(last.origin, Origin::Template);
        assert_eq!(last.name, "aria-personal-today-time-answer");
        // Every user after the template was confirmed shares one task; the first users' own tasks were
        // absorbed into it, so the store folds them in.
        let confirmed = ids.iter().position(|i| i.id == last.id).unwrap();
        assert!(confirmed < crate::miner::SHORT_VARIANTS, "{ids:?}");
        assert!(ids[confirmed..].iter().all(|i| i.id == last.id));
        for early in &ids[..confirmed] {
            assert!(last.absorbs.contains(&early.id), "{early:?} not absorbed");
        }
        // A user seen before the template existed now gets the template too, whatever the time.
        assert_eq!(
            id_of(&d, call(("Amara", "Friday", "10:00"), "and tomorrow?")).id,
            last.id
        );
        // A different instruction that shares most of its words is another task.
        let other = id_of(
            &d,
            serde_json::json!({"model": "m", "messages": [
                {"role": "system", "content": "You are Aria, the personal assistant of Hana. Today is Monday and the time is 8:00. Translate everything Hana writes into formal Japanese."},
                {"role": "user", "content": "hi"}]}),
        );
        assert_ne!(other.id, last.id);
    }

    /// Inputs of a user-turn template that carries them inline, with no delimiter.
    const ROUTED: [&str; 10] = [
        "my card payment that was declined",
        "a top-up that never arrived",
        "the exchange rate I was charged abroad",
        "an unknown direct debit from last week",
        "a blocked PIN",
        "a refund that is still pending",
        "changing my address",
        "a surprise cash withdrawal fee",
        "the app crashing at login",
        "a stolen phone with the app on it",
    ];

    fn route(q: &str) -> serde_json::Value {
        serde_json::json!({"model": "m", "messages": [{"role": "user", "content": format!("Which team should handle {q}? Answer with a team name.")}]})
    }

    #[test]
    fn inline_user_templates_are_found_and_chat_stays_chat() {
        let d = Discoverer::new();
        let ids: Vec<Identity> = ROUTED.iter().map(|q| id_of(&d, route(q))).collect();
        // The first calls are chat until enough distinct inputs show the template.
        assert_eq!(ids[0].origin, Origin::Chat);
        let t = ids.last().unwrap();
        assert_eq!(
            (t.origin, t.name.as_str()),
            (Origin::Template, "team-should-handle-answer-team")
        );
        assert_eq!(
            ids.iter().filter(|i| i.origin == Origin::Chat).count(),
            crate::miner::LONG_VARIANTS - 1
        );
        // Free chat between them stays chat.
        for q in [
            "Which is better, tea or coffee?",
            "Write me a haiku about teams.",
            "Which team won the 2018 World Cup?",
        ] {
            let c = id_of(
                &d,
                serde_json::json!({"model": "m", "messages": [{"role": "user", "content": q}]}),
            );
            assert_eq!(c.origin, Origin::Chat, "{q}");
        }
    }

    #[test]
    fn mined_templates_are_known_after_a_restart_and_on_other_instances() {
        let greet = |name: &str| {
            serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": format!("You are the assistant of {name}. Greet {name} warmly, then help.")},
            {"role": "user", "content": "hello"}]})
        };
        let first = Discoverer::new();
        let (seen, new) = ROUTED.split_at(ROUTED.len() - 1);
        let inline = seen.iter().map(|q| id_of(&first, route(q))).last().unwrap();
        let names = ["Amara", "Bo", "Carlos", "Dmitri", "Elif", "Fatima"];
        let personal = names.iter().map(|n| id_of(&first, greet(n))).last().unwrap();
        assert_eq!((inline.origin, personal.origin), (Origin::Template, Origin::Template));
        let mined = first.take_mined();
        assert_eq!(mined.len(), 2, "{mined:?}");
        assert!(first.take_mined().is_empty(), "taken once");

        // Another instance (or this one after a restart) that learns them from the store: the first call of
        // a new input or a new user goes to the template's task, with nothing to relearn.
        let second = Discoverer::new();
        second.learn_templates(&mined);
        assert_eq!(id_of(&second, route(new[0])).id, inline.id);
        assert_eq!(id_of(&second, greet("Gao")).id, personal.id);
        // Learning them twice, or an older template the newer one generalises, changes nothing.
        second.learn_templates(&mined);
        assert_eq!(id_of(&second, greet("Hana")).id, personal.id);
        // Without them, the first call of a new input is chat again.
        assert_eq!(id_of(&Discoverer::new(), route(new[0])).origin, Origin::Chat);
    }

    #[test]
    fn free_form_conversations_are_chat() {
        let d = Discoverer::new();
        let a = id_of(
            &d,
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "what's a good name for a cat"}]}),
        );
        let b = id_of(
            &d,
            serde_json::json!({"model": "x", "messages": [
            {"role": "user", "content": "explain monads to me like I'm five, with a story"},
            {"role": "assistant", "content": "Once upon a time"}, {"role": "user", "content": "more"}]}),
        );
        assert_eq!(a, b);
        assert_eq!(a.origin, Origin::Chat);
        assert_eq!(a.name, "chat");
    }

    #[test]
    fn anthropic_and_openai_requests_of_one_template_agree() {
        let d = Discoverer::new();
        let o = id_of(
            &d,
            serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": "Summarize in one sentence."}, {"role": "user", "content": "long text here"}]}),
        );
        let a = MessagesRequest::parse(
            br#"{"model":"m","max_tokens":5,"system":"Summarize in one sentence.","messages":[{"role":"user","content":"other text"}]}"#,
        )
        .unwrap();
        let a = d.identify(&Shape::from_anthropic("chat.completions", &a));
        assert_eq!(o.id, a.id);
    }

    #[test]
    fn explicit_names_are_kept() {
        let i = Identity::explicit(" invoice-extractor ");
        assert_eq!(i.id, "invoice-extractor");
        assert_eq!(i.origin, Origin::Explicit);
    }
}
