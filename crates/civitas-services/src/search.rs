//! Search over the catalogue in either language. Chinese has no spaces between words, so
//! text is cut into words by jieba (a dictionary and an HMM for words it does not know),
//! with the catalogue's own names and keywords added to its dictionary; a query is cut the
//! same way and matches whole words, not substrings ("出生" finds 出生登記, and 生登 finds
//! nothing). English is lower-cased and split on anything not a letter or digit.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use jieba_rs::Jieba;

use crate::catalog::{Catalog, Text};

/// The segmenter with the catalogue's words added; built once (its dictionary takes about
/// 100 ms to read).
fn segmenter() -> &'static std::sync::RwLock<Jieba> {
    static J: OnceLock<std::sync::RwLock<Jieba>> = OnceLock::new();
    J.get_or_init(|| std::sync::RwLock::new(Jieba::new()))
}

/// The words of a text: Chinese cut for search (long words and the words within them),
/// other text split and lower-cased.
pub fn words(text: &str) -> Vec<String> {
    let j = segmenter().read().expect("not poisoned");
    let mut out = Vec::new();
    for token in j.cut_for_search(text, true) {
        let w = token.word.trim();
        if w.is_empty() {
            continue;
        }
        if w.chars().any(is_han) {
            if w.chars().count() > 1 || w.chars().all(is_han) {
                out.push(w.to_string());
            }
        } else {
            out.extend(
                w.split(|c: char| !c.is_alphanumeric())
                    .filter(|x| x.len() > 1)
                    .map(str::to_lowercase),
            );
        }
    }
    out.retain(|w| !STOP.contains(&w.as_str()));
    out
}

const STOP: &[&str] = &[
    "的", "與", "及", "和", "或", "之", "a", "an", "the", "of", "and", "or", "for", "to", "in",
    "on", "your", "you",
];

fn is_han(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FFFF)
}

/// One thing found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// A service's or life event's id.
    pub id: String,
    /// Whether it is a life event.
    pub life_event: bool,
    /// How well it matched.
    pub score: u32,
}

/// The index of a catalogue: each word with the documents that have it and how strongly.
#[derive(Default)]
pub struct Index {
    postings: HashMap<String, Vec<(usize, u32)>>,
    docs: Vec<(String, bool)>,
}

impl Index {
    /// Indexes a catalogue's services and life events: names weigh most, then keywords, then
    /// summaries and eligibility.
    pub fn build(c: &Catalog) -> Index {
        {
            let mut j = segmenter().write().expect("not poisoned");
            for text in c
                .services
                .iter()
                .map(|s| (&s.name, &s.keywords))
                .chain(c.life_events.iter().map(|l| (&l.name, &l.keywords)))
                .flat_map(|(n, k)| std::iter::once(n.zh.clone()).chain(k.iter().cloned()))
            {
                if text.chars().all(is_han) && text.chars().count() > 1 {
                    j.add_word(&text, None, None);
                }
            }
        }
        let mut ix = Index::default();
        let docs = c
            .services
            .iter()
            .map(|s| {
                (
                    s.id.clone(),
                    false,
                    &s.name,
                    &s.keywords,
                    vec![&s.summary, &s.eligibility],
                )
            })
            .chain(
                c.life_events
                    .iter()
                    .map(|l| (l.id.clone(), true, &l.name, &l.keywords, vec![&l.summary])),
            );
        for (n, (id, life, name, keywords, texts)) in docs.enumerate() {
            let mut weights: BTreeMap<String, u32> = BTreeMap::new();
            let mut add = |text: &str, w: u32| {
                for word in words(text) {
                    let e = weights.entry(word).or_default();
                    *e = (*e).max(w);
                }
            };
            add_text(&mut add, name, 10);
            for k in keywords {
                add(k, 6);
            }
            for t in texts {
                add_text(&mut add, t, 2);
            }
            for (w, weight) in weights {
                ix.postings.entry(w).or_default().push((n, weight));
            }
            ix.docs.push((id, life));
        }
        ix
    }

    /// What a query finds, best first (life events first among equals).
    pub fn search(&self, query: &str) -> Vec<Hit> {
        let mut scores: HashMap<usize, (u32, usize)> = HashMap::new();
        let q = words(query);
        let mut distinct = q.clone();
        distinct.sort();
        distinct.dedup();
        for w in &distinct {
            if let Some(p) = self.postings.get(w) {
                for (doc, weight) in p {
                    let e = scores.entry(*doc).or_default();
                    e.0 += weight;
                    e.1 += 1;
                }
            }
        }
        let mut hits: Vec<_> = scores
            .into_iter()
            .map(|(doc, (score, matched))| {
                let (id, life) = &self.docs[doc];
                // Documents that match more of the query's words come first.
                (matched, score, *life, id.clone())
            })
            .collect();
        hits.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then(b.1.cmp(&a.1))
                .then(b.2.cmp(&a.2))
                .then(a.3.cmp(&b.3))
        });
        hits.into_iter()
            .map(|(_, score, life_event, id)| Hit {
                id,
                life_event,
                score,
            })
            .collect()
    }
}

fn add_text(add: &mut impl FnMut(&str, u32), t: &Text, w: u32) {
    add(&t.zh, w);
    add(&t.en, w);
}
