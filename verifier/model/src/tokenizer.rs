//! The byte-level BPE tokenizer described by the GGUF's own metadata
//! (`tokenizer.ggml.*`, model `gpt2`), so the file is the only source of truth
//! for token ids. Control tokens (`<|im_start|>` …) are matched as whole
//! tokens in text where the caller allows it (chat templates), never built by
//! merges.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value};
use fancy_regex::Regex;
use poi_artifact::openai::{TokenIdStrings, TokenResolver};
use thiserror::Error;

/// GPT-2's pre-tokenizer split, as llama.cpp and HF `ByteLevel` use it.
const GPT2_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const GGUF_CONTROL: i32 = 3;
const GGUF_USER_DEFINED: i32 = 4;

#[derive(Debug, Error)]
pub enum TokenizerError {
    #[error("tokenizer metadata: {0}")]
    Metadata(String),
    #[error("tokenizer model {0:?} is not supported (only byte-level BPE `gpt2`)")]
    UnsupportedModel(String),
    #[error("pre-tokenizer {0:?} is not supported")]
    UnsupportedPreTokenizer(String),
    #[error("token id {0} is outside the vocabulary")]
    UnknownId(u32),
}

pub struct Tokenizer {
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    /// (left, right) → (rank, merged id)
    merges: HashMap<(u32, u32), (u32, u32)>,
    specials: Vec<(String, u32)>,
    split_digits: bool,
    split: Regex,
    byte_to_char: [char; 256],
    char_to_byte: HashMap<char, u8>,
    eos: u32,
}

impl Tokenizer {
    pub fn from_gguf(content: &Content) -> Result<Self, TokenizerError> {
        let model = string(content, "tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.to_string()));
        }
        // "smollm", like "starcoder", first splits every digit on its own.
        let split_digits = match content.metadata.get("tokenizer.ggml.pre") {
            None => false,
            Some(Value::String(pre)) => match pre.as_str() {
                "default" | "gpt2" => false,
                "smollm" | "starcoder" => true,
                other => return Err(TokenizerError::UnsupportedPreTokenizer(other.to_string())),
            },
            Some(_) => return Err(TokenizerError::Metadata("tokenizer.ggml.pre is not a string".into())),
        };
        let tokens: Vec<String> = array(content, "tokenizer.ggml.tokens")?
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(TokenizerError::Metadata("a token is not a string".into())),
            })
            .collect::<Result<_, _>>()?;
        let ids: HashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
            Some(Value::Array(values)) => values.iter().map(|v| v.to_i32().unwrap_or(1)).collect(),
            _ => vec![1; tokens.len()],
        };
        let mut specials: Vec<(String, u32)> = types
            .iter()
            .enumerate()
            .filter(|&(_, &t)| t == GGUF_CONTROL || t == GGUF_USER_DEFINED)
            .filter_map(|(i, _)| Some((tokens.get(i)?.clone(), i as u32)))
            .filter(|(text, _)| !text.is_empty())
            .collect();
        // Longest first, so a special token that prefixes another never wins.
        specials.sort_by_key(|(text, _)| std::cmp::Reverse(text.len()));
        let mut merges = HashMap::new();
        for (rank, merge) in array(content, "tokenizer.ggml.merges")?.iter().enumerate() {
            let Value::String(merge) = merge else {
                return Err(TokenizerError::Metadata("a merge is not a string".into()));
            };
            let (left, right) = merge
                .split_once(' ')
                .ok_or_else(|| TokenizerError::Metadata(format!("merge {merge:?} is not two tokens")))?;
            let lookup = |t: &str| ids.get(t).copied();
            if let (Some(l), Some(r), Some(m)) = (lookup(left), lookup(right), lookup(&format!("{left}{right}"))) {
                merges.entry((l, r)).or_insert((rank as u32, m));
            }
        }
        let eos = content
            .metadata
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.to_u32().ok())
            .ok_or_else(|| TokenizerError::Metadata("missing tokenizer.ggml.eos_token_id".into()))?;
        let byte_to_char = bytes_to_unicode();
        let char_to_byte = byte_to_char.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        let split = Regex::new(GPT2_SPLIT).expect("constant pattern");
        Ok(Self { tokens, ids, merges, specials, split_digits, split, byte_to_char, char_to_byte, eos })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn eos(&self) -> u32 {
        self.eos
    }

    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    /// Token ids of `text`. With `special`, control tokens written in the text
    /// (`<|im_end|>`) become their ids; without, they are ordinary text.
    pub fn encode(&self, text: &str, special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if !special {
            self.encode_plain(text, &mut out);
            return out;
        }
        // Each control token's next occurrence, searched for again only once
        // the text before it is consumed: linear in the text, however many
        // control tokens it holds.
        let mut next: Vec<Option<usize>> = self.specials.iter().map(|(s, _)| text.find(s.as_str())).collect();
        let mut at = 0;
        loop {
            for ((special, _), found) in self.specials.iter().zip(next.iter_mut()) {
                if matches!(*found, Some(start) if start < at) {
                    *found = text[at..].find(special.as_str()).map(|start| start + at);
                }
            }
            // The earliest; among equal starts, the first in the table.
            let earliest = next
                .iter()
                .zip(&self.specials)
                .filter_map(|(found, (special, id))| found.map(|start| (start, special.len(), *id)))
                .min_by_key(|&(start, _, _)| start);
            match earliest {
                Some((start, len, id)) => {
                    self.encode_plain(&text[at..start], &mut out);
                    out.push(id);
                    at = start + len;
                }
                None => {
                    self.encode_plain(&text[at..], &mut out);
                    return out;
                }
            }
        }
    }

    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) {
        let mut pieces = Vec::new();
        if self.split_digits {
            let mut start = 0;
            for (i, c) in text.char_indices() {
                if c.is_numeric() {
                    pieces.push(&text[start..i]);
                    pieces.push(&text[i..i + c.len_utf8()]);
                    start = i + c.len_utf8();
                }
            }
            pieces.push(&text[start..]);
        } else {
            pieces.push(text);
        }
        for piece in pieces.into_iter().filter(|p| !p.is_empty()) {
            for word in self.split.find_iter(piece).filter_map(Result::ok) {
                self.encode_word(word.as_str(), out);
            }
        }
    }

    /// BPE over one pre-tokenized word: merge the lowest-ranked adjacent pair
    /// (the leftmost among equals) until none is in the merge table. Pairs
    /// wait in a heap over a linked list of symbols, so a long word costs
    /// O(n log n), not the O(n²) of rescanning every pair after each merge
    /// (a request body of one 1 MiB word must not stall the server).
    fn encode_word(&self, word: &str, out: &mut Vec<u32>) {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut symbols: Vec<u32> = word
            .bytes()
            .map(|b| {
                let c = self.byte_to_char[b as usize];
                self.ids.get(c.encode_utf8(&mut [0; 4]) as &str).copied().unwrap_or(0)
            })
            .collect();
        let n = symbols.len();
        // Neighbours of each live symbol by start position; n means none.
        let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { n } else { i - 1 }).collect();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut alive = vec![true; n];
        // (rank, left position, left symbol, right symbol, merged): an entry
        // whose symbols have changed since it was pushed is stale.
        let mut heap = BinaryHeap::new();
        let pair = |heap: &mut BinaryHeap<_>, symbols: &[u32], i: usize, j: usize| {
            if let Some(&(rank, merged)) = self.merges.get(&(symbols[i], symbols[j])) {
                heap.push(Reverse((rank, i, symbols[i], symbols[j], merged)));
            }
        };
        for i in 1..n {
            pair(&mut heap, &symbols, i - 1, i);
        }
        while let Some(Reverse((_, i, left, right, merged))) = heap.pop() {
            let j = next[i];
            if !alive[i] || j == n || symbols[i] != left || symbols[j] != right {
                continue;
            }
            symbols[i] = merged;
            alive[j] = false;
            next[i] = next[j];
            if next[i] != n {
                prev[next[i]] = i;
                pair(&mut heap, &symbols, i, next[i]);
            }
            if prev[i] != n {
                pair(&mut heap, &symbols, prev[i], i);
            }
        }
        out.extend((0..n).filter(|&i| alive[i]).map(|i| symbols[i]));
    }

    /// The bytes a token stands for (control tokens: their text).
    pub fn token_bytes(&self, id: u32) -> Result<Vec<u8>, TokenizerError> {
        let text = self.tokens.get(id as usize).ok_or(TokenizerError::UnknownId(id))?;
        if self.specials.iter().any(|&(_, special)| special == id) {
            return Ok(text.as_bytes().to_vec());
        }
        Ok(text.chars().map(|c| self.char_to_byte.get(&c).copied().unwrap_or(b'?')).collect())
    }

    /// Text of `ids`; byte sequences that are not UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend(self.token_bytes(id)?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// GPT-2's reversible byte → printable-char table.
fn bytes_to_unicode() -> [char; 256] {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        table[b as usize] = if printable(b) {
            char::from_u32(b).expect("latin-1")
        } else {
            let c = char::from_u32(next).expect("below surrogates");
            next += 1;
            c
        };
    }
    table
}

fn string<'a>(content: &'a Content, key: &str) -> Result<&'a str, TokenizerError> {
    match content.metadata.get(key) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(TokenizerError::Metadata(format!("missing string {key}"))),
    }
}

fn array<'a>(content: &'a Content, key: &str) -> Result<&'a [Value], TokenizerError> {
    match content.metadata.get(key) {
        Some(Value::Array(values)) => Ok(values),
        _ => Err(TokenizerError::Metadata(format!("missing array {key}"))),
    }
}

/// Resolves tokens as OpenAI-compatible servers print them, against this
/// vocabulary: vLLM's `token_id:N`, else OpenAI's `bytes` field, else the
/// token string's UTF-8 bytes. A byte string that two ids share, or one
/// that no id has (a server that printed half a character lossily), does
/// not resolve.
pub struct VocabResolver {
    by_bytes: HashMap<Vec<u8>, Option<u32>>,
    vocab: u32,
}

impl VocabResolver {
    pub fn new(tokenizer: &Tokenizer) -> Self {
        let mut by_bytes: HashMap<Vec<u8>, Option<u32>> = HashMap::new();
        for id in 0..tokenizer.vocab_size() as u32 {
            if let Ok(bytes) = tokenizer.token_bytes(id) {
                by_bytes.entry(bytes).and_modify(|seen| *seen = None).or_insert(Some(id));
            }
        }
        Self { by_bytes, vocab: tokenizer.vocab_size() as u32 }
    }
}

impl TokenResolver for VocabResolver {
    fn resolve(&self, token: &str, bytes: Option<&[u8]>) -> Option<u32> {
        if let Some(id) = TokenIdStrings.resolve(token, None) {
            return (id < self.vocab).then_some(id);
        }
        *self.by_bytes.get(bytes.unwrap_or(token.as_bytes()))?
    }
}
