//! Template mining, as log-template miners (Drain, Spell) do it: where the masked prompts of one code path
//! differ token by token, those positions are the template's variables, whatever they hold (a user's name,
//! a weekday, an input pasted inline with no delimiter).
//!
//! Masking ([`crate::mask`]) already turns the spans it can recognise (numbers, ids, quotes, labelled
//! inserts) into placeholders; what it cannot recognise makes otherwise identical prompts differ. The miner
//! keeps, per template group, the recent distinct skeletons; a new skeleton is aligned with them (longest
//! common subsequence of tokens) and the common tokens become a candidate template. Two different
//! instructions also share words, so a candidate is only confirmed on evidence that its gaps are variables:
//! - short gaps (a name, a weekday: at most [`SHORT_GAP`] tokens) confirm after [`SHORT_VARIANTS`] distinct
//!   skeletons fit the template;
//! - long gaps (an inline input) confirm after [`LONG_VARIANTS`] distinct skeletons, each seen about once:
//!   different instructions repeat, inputs do not.
//!
//! Ids stay deterministic: a skeleton no template covers keeps the id it always had, and a confirmed
//! template's id is a hash of its text. Confirming a template absorbs the ids its skeletons had before, which
//! the store folds into it ([`Mined::absorbs`]).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use leanlm_core::MinedTemplate;

/// Tokens aligned per skeleton: the head and the tail of longer ones, the middle standing in as one token.
const HEAD: usize = 192;
const TAIL: usize = 64;
/// Distinct skeletons remembered per group; past this the oldest is forgotten. A group holds every template
/// of its part (all user turns without a system prompt, say) and free chat, so it must span enough calls to
/// see a template that carries a tenth of them several times.
const RECENT: usize = 512;
/// Skeletons remembered across all groups; past this every group forgets its skeletons (not its templates).
/// At most `HEAD + TAIL + 1` tokens of 32 bytes each: 34 MB at worst, whatever clients send.
const SEEN: usize = 4096;
/// Groups remembered; past this the memory is reset (bounded, and rare: groups are endpoint × schema).
const GROUPS: usize = 256;
/// Confirmed templates per group; past this no more are mined in that group.
const TEMPLATES: usize = 256;
/// Templates confirmed and not yet taken for the store; past this the newest are not kept (only persistence
/// is lost: they still serve).
const FRESH: usize = 1024;
/// The widest gap, in tokens, that counts as a short variable (a name, a weekday, a time of day).
pub const SHORT_GAP: usize = 4;
/// Distinct skeletons that must fit a template whose gaps are all short.
pub const SHORT_VARIANTS: usize = 5;
/// Distinct skeletons that must fit a template with a long gap, seen on average at most [`LONG_REPEATS`] times.
pub const LONG_VARIANTS: usize = 8;
const LONG_REPEATS: f64 = 2.0;
/// Candidate alignments tried per unmatched skeleton.
const ALIGN: usize = 4;
/// Relaxations tried per candidate template.
const GENERALISE: usize = 8;
/// A confirmed template weighs as much as this many skeletons when a new one generalises it.
const TEMPLATE_WEIGHT: usize = SHORT_VARIANTS;
/// The placeholder of a mined variable.
pub const GAP: &str = "⟨*⟩";

/// One token of a skeleton: its text and how many original tokens it stands for (the elided middle of a
/// long skeleton stands for many).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    hash: u64,
    text: Box<str>,
    weight: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Fixed(Token),
    Gap,
}

/// A confirmed template.
#[derive(Debug)]
struct Template {
    slots: Vec<Slot>,
    text: String,
    /// Ids of the skeletons (and earlier templates) this one absorbed.
    absorbs: Vec<String>,
}

/// A distinct skeleton seen recently and not covered by a template.
#[derive(Debug)]
struct Seen {
    tokens: Vec<Token>,
    id: String,
    count: usize,
}

#[derive(Default, Debug)]
struct Group {
    templates: Vec<Template>,
    recent: VecDeque<Seen>,
}

/// What the miner made of a skeleton.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mined {
    /// No template covers it: it stands for itself.
    Alone,
    /// A confirmed template covers it.
    Template {
        /// The template's text, variables as [`GAP`].
        text: String,
        /// Ids this template absorbed (the skeletons' own ids before it was confirmed).
        absorbs: Vec<String>,
    },
}

/// Mines templates per group. Not thread-safe by itself: the discoverer holds it behind a lock.
#[derive(Default, Debug)]
pub struct Miner {
    groups: HashMap<u64, Group>,
    /// Skeletons held in all groups' `recent`.
    seen: usize,
    /// Templates confirmed since the last [`Miner::take_fresh`].
    fresh: Vec<MinedTemplate>,
}

impl Miner {
    /// The template behind `skeleton` in `group`; `id` is the id the skeleton has on its own, recorded so a
    /// template confirmed later can absorb it. `confirmed` is set when this call confirmed a template.
    ///
    /// `long_gaps` allows variables longer than [`SHORT_GAP`] tokens: right for a user turn, which may carry
    /// its input inline; not for a system prompt, whose instructions vary by whole clauses between code
    /// paths while a system prompt's variables (a name, a date) are short.
    pub fn mine(&mut self, group: u64, skeleton: &str, id: &str, long_gaps: bool) -> (Mined, bool) {
        let tokens = tokenize(skeleton);
        if self.groups.len() >= GROUPS && !self.groups.contains_key(&group) {
            self.groups.clear();
            self.seen = 0;
        }
        if self.seen >= SEEN {
            for g in self.groups.values_mut() {
                g.recent.clear();
            }
            self.seen = 0;
        }
        let g = self.groups.entry(group).or_default();
        if let Some(t) = g.templates.iter().find(|t| fits(&t.slots, &tokens).is_some()) {
            return (
                Mined::Template {
                    text: t.text.clone(),
                    absorbs: t.absorbs.clone(),
                },
                false,
            );
        }
        // Seen before exactly: count it, nothing new to learn.
        if let Some(s) = g.recent.iter_mut().find(|s| same(&s.tokens, &tokens)) {
            s.count += 1;
            return (Mined::Alone, false);
        }
        let before = g.recent.len();
        let confirmed = confirm(g, &tokens, id, long_gaps);
        self.seen -= before - g.recent.len();
        if g.recent.len() >= RECENT {
            g.recent.pop_front();
            self.seen -= 1;
        }
        match confirmed {
            Some(t) => {
                let mined = Mined::Template {
                    text: t.text.clone(),
                    absorbs: t.absorbs.clone(),
                };
                if self.fresh.len() < FRESH {
                    self.fresh.push(MinedTemplate {
                        group,
                        text: t.text.clone(),
                        absorbs: t.absorbs.clone(),
                    });
                }
                if g.templates.len() < TEMPLATES {
                    g.templates.push(t);
                }
                (mined, true)
            }
            None => {
                self.seen += 1;
                g.recent.push_back(Seen {
                    // Only the template's own text is ever shown, and it comes from the skeleton that
                    // confirms it: remembered skeletons keep hashes alone.
                    tokens: tokens.into_iter().map(|t| Token { text: "".into(), ..t }).collect(),
                    id: id.to_owned(),
                    count: 1,
                });
                (Mined::Alone, false)
            }
        }
    }

    /// Templates confirmed since the last call, for the store.
    pub fn take_fresh(&mut self) -> Vec<MinedTemplate> {
        std::mem::take(&mut self.fresh)
    }

    /// Knows a template mined before (by this process before a restart, or by another instance). A template
    /// it generalises (whose absorbed ids it absorbs too) is replaced by it, as when it was mined.
    pub fn learn(&mut self, t: &MinedTemplate) {
        if self.groups.len() >= GROUPS && !self.groups.contains_key(&t.group) {
            return;
        }
        let g = self.groups.entry(t.group).or_default();
        if g.templates.iter().any(|known| known.text == t.text) {
            return;
        }
        // A template with no absorbed ids (a damaged row) says nothing of what generalises it: it stays.
        g.templates
            .retain(|known| known.absorbs.is_empty() || !known.absorbs.iter().all(|a| t.absorbs.contains(a)));
        if g.templates.len() >= TEMPLATES {
            return;
        }
        let slots = tokenize(&t.text)
            .into_iter()
            .map(|tok| if &*tok.text == GAP { Slot::Gap } else { Slot::Fixed(tok) })
            .collect();
        g.templates.push(Template {
            slots,
            text: t.text.clone(),
            absorbs: t.absorbs.clone(),
        });
    }
}

/// Tries to confirm a template from `tokens` and the group's recent skeletons and templates. On success the
/// skeletons it covers leave `recent`, and templates it generalises leave `templates`.
fn confirm(g: &mut Group, tokens: &[Token], id: &str, long_gaps: bool) -> Option<Template> {
    if tokens.is_empty() {
        return None;
    }
    let pm = PositionMasks::new(tokens);
    // The partners most alike by LCS length, recent skeletons and templates alike.
    let mut partners: Vec<(usize, Partner)> = Vec::new();
    for (i, s) in g.recent.iter().enumerate() {
        // A template's text opens or closes its prompts: partners share the first or the last two tokens.
        // This keeps unrelated chat messages from costing an alignment each.
        if !shares_an_end(tokens, &s.tokens) {
            continue;
        }
        let l = pm.lcs(s.tokens.iter().map(|t| t.hash));
        if plausible(l, tokens.len(), s.tokens.len()) {
            partners.push((l, Partner::Recent(i)));
        }
    }
    for (i, t) in g.templates.iter().enumerate() {
        let fixed = t.slots.iter().filter(|s| matches!(s, Slot::Fixed(_))).count();
        // A gap never equals a token, so the template's fixed tokens are what can align.
        let l = pm.lcs(t.slots.iter().map(|s| match s {
            Slot::Fixed(t) => t.hash,
            Slot::Gap => u64::MAX,
        }));
        if plausible(l, tokens.len(), fixed) {
            partners.push((l, Partner::Template(i)));
        }
    }
    partners.sort_by_key(|p| std::cmp::Reverse(p.0));
    partners.truncate(ALIGN);

    let mut best: Option<(Vec<Slot>, Evidence)> = None;
    for (_, p) in &partners {
        let other: Vec<Slot> = match p {
            Partner::Recent(i) => g.recent[*i].tokens.iter().cloned().map(Slot::Fixed).collect(),
            Partner::Template(i) => g.templates[*i].slots.clone(),
        };
        let Some(slots) = align(tokens, &other) else { continue };
        let slots = generalise(g, slots, tokens);
        let ev = evidence(g, &slots, tokens);
        if ev.confirms(long_gaps) && best.as_ref().is_none_or(|(_, b)| ev.variants > b.variants) {
            best = Some((slots, ev));
        }
    }
    let (slots, ev) = best?;
    let text = render(&slots);
    let mut absorbs: Vec<String> = vec![id.to_owned()];
    let mut keep = VecDeque::with_capacity(g.recent.len());
    for (i, s) in std::mem::take(&mut g.recent).into_iter().enumerate() {
        if ev.recent.contains(&i) {
            absorbs.push(s.id);
        } else {
            keep.push_back(s);
        }
    }
    g.recent = keep;
    let mut i = 0;
    g.templates.retain(|t| {
        let absorbed = ev.templates.contains(&i);
        i += 1;
        if absorbed {
            absorbs.extend(t.absorbs.iter().cloned());
        }
        !absorbed
    });
    absorbs.sort();
    absorbs.dedup();
    Some(Template { slots, text, absorbs })
}

fn same(a: &[Token], b: &[Token]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.hash == b.hash)
}

fn shares_an_end(a: &[Token], b: &[Token]) -> bool {
    let k = 2.min(a.len()).min(b.len());
    let same = |x: &[Token], y: &[Token]| x.iter().zip(y).all(|(x, y)| x.hash == y.hash);
    same(&a[..k], &b[..k]) || same(&a[a.len() - k..], &b[b.len() - k..])
}

enum Partner {
    Recent(usize),
    Template(usize),
}

/// Relaxes a template aligned from two skeletons with the other skeletons of its kind: two inputs may share
/// a word next to the template's text ("… my card? Answer …"), which a third input does not. Each step must
/// keep three quarters of the fixed tokens, so a template never dissolves into words chat messages share.
fn generalise(g: &Group, mut slots: Vec<Slot>, tokens: &[Token]) -> Vec<Slot> {
    let fixed = |s: &[Slot]| s.iter().filter(|s| matches!(s, Slot::Fixed(_))).count();
    let mut steps = 0;
    for s in g.recent.iter().rev() {
        if steps == GENERALISE || !shares_an_end(tokens, &s.tokens) || fits(&slots, &s.tokens).is_some() {
            continue;
        }
        let Some(wider) = align(&s.tokens, &slots) else {
            continue;
        };
        if fixed(&wider) * 4 >= fixed(&slots) * 3 && fits(&wider, tokens).is_some() {
            slots = wider;
            steps += 1;
        }
    }
    slots
}

/// Whether two token sequences share enough to be worth aligning: a few tokens, and a quarter of the
/// longer one.
fn plausible(lcs: usize, a: usize, b: usize) -> bool {
    lcs >= 4 && lcs * 4 >= a.max(b)
}

/// What speaks for a candidate template.
#[derive(Debug, Default)]
struct Evidence {
    /// Distinct skeletons it fits (templates it generalises count [`TEMPLATE_WEIGHT`] each).
    variants: usize,
    /// Calls behind those skeletons.
    calls: usize,
    /// The widest gap filled in any of them, in tokens.
    widest: usize,
    recent: Vec<usize>,
    templates: Vec<usize>,
}

impl Evidence {
    fn confirms(&self, long_gaps: bool) -> bool {
        if self.widest <= SHORT_GAP {
            self.variants >= SHORT_VARIANTS
        } else if !long_gaps {
            false
        } else {
            self.variants >= LONG_VARIANTS && (self.calls as f64) <= LONG_REPEATS * self.variants as f64
        }
    }
}

fn evidence(g: &Group, slots: &[Slot], tokens: &[Token]) -> Evidence {
    let mut ev = Evidence::default();
    let Some(w) = fits(slots, tokens) else {
        return ev;
    };
    ev.variants = 1;
    ev.calls = 1;
    ev.widest = w;
    for (i, s) in g.recent.iter().enumerate() {
        if let Some(w) = fits(slots, &s.tokens) {
            ev.variants += 1;
            ev.calls += s.count;
            ev.widest = ev.widest.max(w);
            ev.recent.push(i);
        }
    }
    for (i, t) in g.templates.iter().enumerate() {
        if generalises(slots, &t.slots) {
            ev.variants += TEMPLATE_WEIGHT;
            ev.calls += TEMPLATE_WEIGHT;
            ev.templates.push(i);
        }
    }
    ev
}

/// Whether template `a` covers everything template `b` does: `b`'s fixed tokens fit `a` with `b`'s gaps
/// falling in `a`'s.
fn generalises(a: &[Slot], b: &[Slot]) -> bool {
    // Each gap of `b` is a token no fixed token of `a` equals; fitting then needs a gap of `a` there.
    let tokens: Vec<Token> = b
        .iter()
        .map(|s| match s {
            Slot::Fixed(t) => t.clone(),
            Slot::Gap => Token {
                hash: u64::MAX,
                text: GAP.into(),
                weight: 1,
            },
        })
        .collect();
    fits(a, &tokens).is_some()
}

/// Whether `tokens` fit the template; if so, the widest gap filled (in original tokens).
///
/// A gap takes any number of tokens. After a gap the next run of fixed tokens is found at its first
/// occurrence, except the template's last run, which must end the text.
fn fits(slots: &[Slot], tokens: &[Token]) -> Option<usize> {
    let mut i = 0; // position in tokens
    let mut s = 0; // position in slots
    let mut widest = 0;
    while s < slots.len() {
        match &slots[s] {
            Slot::Fixed(t) => {
                if tokens.get(i)?.hash != t.hash {
                    return None;
                }
                i += 1;
                s += 1;
            }
            Slot::Gap => {
                // The run of fixed tokens after the gap.
                let start = s + 1;
                let mut end = start;
                while end < slots.len() && matches!(slots[end], Slot::Fixed(_)) {
                    end += 1;
                }
                let run: Vec<u64> = slots[start..end]
                    .iter()
                    .map(|s| match s {
                        Slot::Fixed(t) => t.hash,
                        Slot::Gap => u64::MAX,
                    })
                    .collect();
                let at = if run.is_empty() {
                    tokens.len()
                } else if end == slots.len() {
                    let at = tokens.len().checked_sub(run.len())?;
                    (at >= i && tokens[at..].iter().map(|t| t.hash).eq(run.iter().copied())).then_some(at)?
                } else {
                    let last = tokens.len().checked_sub(run.len())?;
                    (i..=last).find(|&at| {
                        tokens[at..at + run.len()]
                            .iter()
                            .map(|t| t.hash)
                            .eq(run.iter().copied())
                    })?
                };
                widest = widest.max(tokens[i..at].iter().map(|t| t.weight).sum());
                i = at + run.len();
                s = end;
            }
        }
    }
    (i == tokens.len()).then_some(widest)
}

/// Aligns a skeleton with another skeleton or template: their common tokens in order, with a gap wherever
/// either has tokens the other lacks. Common single tokens stranded between long gaps are coincidence (a
/// word two inputs share), not template text, and become part of the gap. `None` when too little is left
/// to be a template.
fn align(a: &[Token], b: &[Slot]) -> Option<Vec<Slot>> {
    let eq = |i: usize, j: usize| matches!(&b[j], Slot::Fixed(t) if t.hash == a[i].hash);
    let (n, m) = (a.len(), b.len());
    let mut dp = vec![0u16; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            dp[at(i, j)] = if eq(i, j) {
                dp[at(i + 1, j + 1)] + 1
            } else {
                dp[at(i + 1, j)].max(dp[at(i, j + 1)])
            };
        }
    }
    // Walk the alignment: runs of common tokens, and between them the widths each side skips.
    let mut items: Vec<Item> = Vec::new();
    let (mut i, mut j) = (0, 0);
    let mut skip = (0usize, 0usize, false);
    while i < n || j < m {
        if i < n && j < m && eq(i, j) {
            if skip != (0, 0, false) {
                items.push(Item::Gap(skip.0.max(skip.1), skip.2));
                skip = (0, 0, false);
            }
            // Remembered skeletons keep no text: take it from whichever side has it.
            let t = match &b[j] {
                Slot::Fixed(t) if a[i].text.is_empty() => t.clone(),
                _ => a[i].clone(),
            };
            items.push(Item::Tok(t));
            i += 1;
            j += 1;
        } else if j < m && (i == n || dp[at(i, j + 1)] >= dp[at(i + 1, j)]) {
            match &b[j] {
                Slot::Fixed(t) => skip.1 += t.weight,
                Slot::Gap => skip.2 = true,
            }
            j += 1;
        } else {
            skip.0 += a[i].weight;
            i += 1;
        }
    }
    if skip != (0, 0, false) {
        items.push(Item::Gap(skip.0.max(skip.1), skip.2));
    }
    // Strand short runs that sit between long gaps.
    let long = |it: Option<&Item>| matches!(it, Some(Item::Gap(w, wild)) if *w > SHORT_GAP || *wild);
    let mut out: Vec<Slot> = Vec::new();
    let mut k = 0;
    while k < items.len() {
        match &items[k] {
            Item::Gap(..) => {
                if out.last() != Some(&Slot::Gap) {
                    out.push(Slot::Gap);
                }
                k += 1;
            }
            Item::Tok(_) => {
                let start = k;
                while k < items.len() && matches!(items[k], Item::Tok(_)) {
                    k += 1;
                }
                let run = k - start;
                let before = start.checked_sub(1).and_then(|p| items.get(p));
                let after = items.get(k);
                let stranded = run < 3 && before.is_some() && after.is_some() && long(before) && long(after);
                if stranded {
                    if out.last() != Some(&Slot::Gap) {
                        out.push(Slot::Gap);
                    }
                } else {
                    out.extend(items[start..k].iter().map(|it| match it {
                        Item::Tok(t) => Slot::Fixed(t.clone()),
                        Item::Gap(..) => Slot::Gap,
                    }));
                }
            }
        }
    }
    let fixed: Vec<&Token> = out
        .iter()
        .filter_map(|s| match s {
            Slot::Fixed(t) => Some(t),
            Slot::Gap => None,
        })
        .collect();
    let words = fixed
        .iter()
        .filter(|t| t.text.chars().any(char::is_alphabetic) && !t.text.starts_with('⟨'))
        .count();
    let gaps = out.iter().filter(|s| matches!(s, Slot::Gap)).count();
    // Enough fixed words, in runs long enough to be text rather than words two texts happen to share.
    (gaps > 0 && words >= 3 && fixed.len() >= 4 && fixed.len() >= 2 * gaps).then_some(out)
}

enum Item {
    Tok(Token),
    /// Tokens skipped on the wider side, and whether a template's gap was among them.
    Gap(usize, bool),
}

fn render(slots: &[Slot]) -> String {
    let mut out = String::new();
    for s in slots {
        if !out.is_empty() {
            out.push(' ');
        }
        match s {
            Slot::Fixed(t) => out.push_str(&t.text),
            Slot::Gap => out.push_str(GAP),
        }
    }
    out
}

/// Bit-parallel LCS length (Allison–Dix, Hyyrö): one pass over the other sequence, a few word operations
/// per token, so finding partners costs microseconds where a table would cost milliseconds.
struct PositionMasks {
    masks: HashMap<u64, Vec<u64>, BuildHasherDefault<PassThrough>>,
    words: usize,
    len: usize,
}

impl PositionMasks {
    fn new(tokens: &[Token]) -> Self {
        let words = tokens.len().div_ceil(64).max(1);
        let mut masks: HashMap<u64, Vec<u64>, BuildHasherDefault<PassThrough>> = HashMap::default();
        for (i, t) in tokens.iter().enumerate() {
            masks.entry(t.hash).or_insert_with(|| vec![0; words])[i / 64] |= 1 << (i % 64);
        }
        PositionMasks {
            masks,
            words,
            len: tokens.len(),
        }
    }

    fn lcs(&self, other: impl Iterator<Item = u64>) -> usize {
        let mut v = vec![u64::MAX; self.words];
        for h in other {
            let Some(m) = self.masks.get(&h) else { continue };
            // V' = (V + (V & M)) | (V & !M), with the carry across words.
            let mut carry = 0u64;
            for w in 0..self.words {
                let u = v[w] & m[w];
                let (s1, c1) = v[w].overflowing_add(u);
                let (s2, c2) = s1.overflowing_add(carry);
                carry = (c1 || c2) as u64;
                v[w] = s2 | (v[w] & !m[w]);
            }
        }
        let mut zeros = 0;
        for (w, x) in v.iter().enumerate() {
            let bits = (self.len - w * 64).min(64);
            let mask = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
            zeros += (!x & mask).count_ones() as usize;
        }
        zeros
    }
}

/// Token hashes are already well mixed (FNV-1a): hashing them again would only cost time.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Splits a skeleton into word, placeholder and punctuation tokens; a long one keeps its head and tail, its
/// middle as one token.
fn tokenize(text: &str) -> Vec<Token> {
    let mut spans: Vec<&str> = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        let mut end = i + c.len_utf8();
        if c == '⟨' {
            for (j, d) in chars.by_ref() {
                end = j + d.len_utf8();
                if d == '⟩' {
                    break;
                }
            }
        } else if c.is_alphanumeric() {
            while let Some(&(j, d)) = chars.peek() {
                if !d.is_alphanumeric() {
                    break;
                }
                end = j + d.len_utf8();
                chars.next();
            }
        }
        spans.push(&text[i..end]);
    }
    let token = |s: &str, weight: usize| Token {
        hash: fnv(s.as_bytes()),
        text: s.into(),
        weight,
    };
    if spans.len() <= HEAD + TAIL + 1 {
        return spans.into_iter().map(|s| token(s, 1)).collect();
    }
    let middle = &spans[HEAD..spans.len() - TAIL];
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for s in middle {
        h = fnv_extend(h, s.as_bytes());
        h = fnv_extend(h, b" ");
    }
    let mut out: Vec<Token> = spans[..HEAD].iter().map(|s| token(s, 1)).collect();
    out.push(Token {
        hash: h,
        text: "…".into(),
        weight: middle.len(),
    });
    out.extend(spans[spans.len() - TAIL..].iter().map(|s| token(s, 1)));
    out
}

fn fnv(bytes: &[u8]) -> u64 {
    fnv_extend(0xcbf2_9ce4_8422_2325, bytes)
}

fn fnv_extend(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mine_all(m: &mut Miner, texts: &[String]) -> Vec<Mined> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| m.mine(1, t, &format!("id{i}"), true).0)
            .collect()
    }

    fn template_of(m: &Mined) -> Option<&str> {
        match m {
            Mined::Template { text, .. } => Some(text),
            Mined::Alone => None,
        }
    }

    #[test]
    fn bit_parallel_lcs_matches_the_table() {
        let toks = |s: &str| tokenize(s);
        for (a, b) in [
            ("a b c d e f", "a c e"),
            ("x y z", "p q r"),
            ("one two three four", "one two three four"),
        ] {
            let (ta, tb) = (toks(a), toks(b));
            let pm = PositionMasks::new(&ta);
            let slots: Vec<Slot> = tb.iter().cloned().map(Slot::Fixed).collect();
            let fixed_in_alignment =
                align(&ta, &slots).map(|s| s.iter().filter(|s| matches!(s, Slot::Fixed(_))).count());
            let l = pm.lcs(tb.iter().map(|t| t.hash));
            assert!(fixed_in_alignment.is_none_or(|f| f == l), "{a} / {b}: {l}");
        }
        // Across the 64-token word boundary.
        let long: String = (0..150).map(|i| format!("w{i} ")).collect();
        let other: String = (0..150).filter(|i| i % 3 != 0).map(|i| format!("w{i} ")).collect();
        assert_eq!(
            PositionMasks::new(&toks(&long)).lcs(toks(&other).iter().map(|t| t.hash)),
            100
        );
    }

    #[test]
    fn per_user_names_become_a_variable_after_enough_users() {
        let mut m = Miner::default();
        let names = ["Alice", "Bob Stone", "Chen Wei", "Dana", "Emeka Obi", "Farah", "Goran"];
        let days = ["Monday", "Tuesday", "Friday"];
        let texts: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "You are the personal assistant of {n}. Today is {}, ⟨n⟩ . Keep answers short and friendly, and address {n} by name.",
                    days[i % 3]
                )
            })
            .collect();
        let out = mine_all(&mut m, &texts);
        assert!(out[..SHORT_VARIANTS - 1].iter().all(|o| *o == Mined::Alone), "{out:?}");
        let Mined::Template { text, absorbs } = &out[SHORT_VARIANTS - 1] else {
            panic!("{out:?}")
        };
        assert!(text.contains("personal assistant of ⟨*⟩"), "{text}");
        assert_eq!(absorbs.len(), SHORT_VARIANTS, "{absorbs:?}");
        // Later users fit at once.
        assert!(
            out[SHORT_VARIANTS..]
                .iter()
                .all(|o| template_of(o) == Some(text.as_str())),
            "{out:?}"
        );
    }

    #[test]
    fn inline_inputs_become_a_variable_but_repeated_instructions_do_not() {
        let mut m = Miner::default();
        let inputs = [
            "my card payment was declined at the shop",
            "a top-up that never arrived",
            "the exchange rate I was charged",
            "an unknown direct debit",
            "my PIN being blocked after three tries",
            "a refund that is still pending",
            "changing the address on my account",
            "a cash withdrawal fee I did not expect",
            "the app not letting me log in",
        ];
        let texts: Vec<String> = inputs
            .iter()
            .map(|q| format!("Which team should handle {q}? Answer with a team name."))
            .collect();
        let out = mine_all(&mut m, &texts);
        let found = out.iter().position(|o| template_of(o).is_some()).expect("a template");
        assert_eq!(found, LONG_VARIANTS - 1);
        assert_eq!(
            template_of(&out[found]),
            Some("Which team should handle ⟨*⟩ ? Answer with a team name .")
        );

        // Different instructions that share words, each repeated: never one template.
        let mut m = Miner::default();
        let instructions = [
            "You are a support assistant for a retail bank. Classify the message into one intent.",
            "You are a support assistant for a retail bank. Write a friendly reply to the customer.",
            "You are a support assistant for a retail bank. Summarize the complaint in one line.",
            "You are a support assistant for a retail bank. Extract the amount and the merchant as JSON.",
            "You are a support assistant for a retail bank. Translate the message into German.",
            "You are a support assistant for a retail bank. Decide whether the message is urgent.",
            "You are a support assistant for a retail bank. List the products the customer mentions.",
            "You are a support assistant for a retail bank. Rate the customer's anger from one to five.",
            "You are a support assistant for a retail bank. Suggest the next best action for the agent.",
        ];
        for round in 0..3 {
            for (i, t) in instructions.iter().enumerate() {
                let (mined, _) = m.mine(1, t, &format!("id{i}"), false);
                assert_eq!(mined, Mined::Alone, "round {round}: {t}");
            }
        }
    }

    #[test]
    fn a_template_generalises_when_a_new_variable_appears() {
        let mut m = Miner::default();
        let mk = |name: &str, team: &str| {
            format!("Hello {name}, you work in the {team} team. Answer questions about the {team} roadmap.")
        };
        let names = ["Ann", "Ben", "Cleo", "Dev", "Eli", "Fay"];
        for (i, n) in names.iter().enumerate() {
            m.mine(1, &mk(n, "payments"), &format!("a{i}"), false);
        }
        let (first, _) = m.mine(1, &mk("Gus", "payments"), "a9", false);
        assert_eq!(
            template_of(&first),
            Some("Hello ⟨*⟩ , you work in the payments team . Answer questions about the payments roadmap .")
        );
        let (general, confirmed) = m.mine(1, &mk("Hal", "risk"), "b0", false);
        assert!(confirmed);
        let Mined::Template { text, absorbs } = general else {
            panic!()
        };
        assert_eq!(
            text,
            "Hello ⟨*⟩ , you work in the ⟨*⟩ team . Answer questions about the ⟨*⟩ roadmap ."
        );
        assert!(
            absorbs.contains(&"a0".to_owned()) && absorbs.contains(&"b0".to_owned()),
            "{absorbs:?}"
        );
        assert_eq!(
            template_of(&m.mine(1, &mk("Ivy", "payments"), "x", false).0),
            Some(text.as_str())
        );
    }

    #[test]
    fn free_chat_stays_alone() {
        let mut m = Miner::default();
        let chats = [
            "what's a good name for a cat",
            "explain monads to me like I'm five",
            "Can you write a short poem about the sea?",
            "How do I reverse a list in Python?",
            "What is the capital of Australia and why is it not Sydney?",
            "Can you help me plan a trip to Japan in April?",
            "Why is the sky blue?",
            "Write a cover letter for a junior data analyst job.",
            "Can you explain the difference between TCP and UDP?",
            "What should I cook tonight with rice and eggs?",
        ];
        for round in 0..2 {
            for (i, c) in chats.iter().enumerate() {
                assert_eq!(
                    m.mine(2, c, &format!("c{i}"), true).0,
                    Mined::Alone,
                    "round {round}: {c}"
                );
            }
        }
    }

    #[test]
    fn memory_is_bounded() {
        let mut m = Miner::default();
        for g in 0..(GROUPS as u64 + 10) {
            for i in 0..40 {
                // Texts that share neither end: nothing to align, everything remembered.
                m.mine(g % 7, &format!("a{g}x{i} alpha beta gamma delta z{i}y{g}"), "id", true);
            }
            m.mine(g, "x y z", "id", true);
            let held: usize = m.groups.values().map(|g| g.recent.len()).sum();
            assert_eq!(held, m.seen);
            assert!(m.seen <= SEEN);
        }
        assert!(m.groups.len() <= GROUPS);
        assert!(
            m.groups
                .values()
                .all(|g| g.recent.len() <= RECENT && g.templates.len() <= TEMPLATES)
        );
    }
}
