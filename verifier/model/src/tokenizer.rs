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
        let mut rest = text;
        while !rest.is_empty() {
            let next_special = if special { self.find_special(rest) } else { None };
            let (plain, after) = match next_special {
                Some((start, _, _)) => rest.split_at(start),
                None => (rest, ""),
            };
            self.encode_plain(plain, &mut out);
            match next_special {
                Some((_, len, id)) => {
                    out.push(id);
                    rest = &after[len..];
                }
                None => rest = "",
            }
        }
        out
    }

    /// The earliest special token in `text`: (byte offset, length, id).
    fn find_special(&self, text: &str) -> Option<(usize, usize, u32)> {
        let mut best: Option<(usize, usize, u32)> = None;
        for (special, id) in &self.specials {
            if let Some(start) = text.find(special.as_str()) {
                if best.is_none_or(|(b, _, _)| start < b) {
                    best = Some((start, special.len(), *id));
                }
            }
        }
        best
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
    /// until none is in the merge table.
    fn encode_word(&self, word: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<u32> = word
            .bytes()
            .map(|b| {
                let c = self.byte_to_char[b as usize];
                self.ids.get(c.encode_utf8(&mut [0; 4]) as &str).copied().unwrap_or(0)
            })
            .collect();
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, pair)| self.merges.get(&(pair[0], pair[1])).map(|&(rank, merged)| (rank, i, merged)))
                .min();
            let Some((_, i, merged)) = best else { break };
            symbols[i] = merged;
            symbols.remove(i + 1);
        }
        out.extend(symbols);
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
