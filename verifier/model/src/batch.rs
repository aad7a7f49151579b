//! Continuous batching: many generations share each decoding step, so every
//! weight is read once per step for all of them. A sequence joins with its
//! prompt's prefill (alone, between steps) and leaves as soon as it ends;
//! `Llama::decode_batch` keeps each one's numbers exactly those of
//! generating it alone.

use poi_artifact::Candidate;

use crate::generate::{Generated, Sequence};
use crate::{KvCache, Llama, ModelError};

/// What a step did to one member of the batch.
pub enum Event<'a> {
    /// A token was picked: the position's logged candidates and the index of
    /// the chosen one.
    Token { candidates: &'a [Candidate], chosen: u8 },
    /// The generation ended (this member has left the batch).
    Done(Generated),
}

struct Member<T> {
    sequence: Sequence<'static>,
    cache: KvCache,
    /// The last picked token: the next step's input.
    next: u32,
    tag: T,
}

/// The generations in flight, each with its KV cache and a caller's `tag`
/// (where its events go).
pub struct Batch<'m, T> {
    model: &'m Llama,
    members: Vec<Member<T>>,
}

impl<'m, T> Batch<'m, T> {
    pub fn new(model: &'m Llama) -> Self {
        Self { model, members: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Prefills `prompt` and picks the first token (reported through
    /// `on_event`); the sequence then decodes with the batch until it ends.
    pub fn join(
        &mut self,
        prompt: &[u32],
        mut sequence: Sequence<'static>,
        mut tag: T,
        mut on_event: impl FnMut(&mut T, Event<'_>),
    ) -> Result<(), ModelError> {
        let mut cache = self.model.new_cache();
        let row = self.model.forward(prompt, &mut cache, prompt.len().saturating_sub(1))?;
        let next = sequence.pick(&row)?;
        report(&sequence, &mut tag, &mut on_event);
        if sequence.is_done() {
            on_event(&mut tag, Event::Done(sequence.finish()));
        } else {
            self.members.push(Member { sequence, cache, next, tag });
        }
        Ok(())
    }

    /// Drops, without reporting them, the members whose tag `keep` refuses
    /// (no one waits for them any more: a client that went away).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.members.retain(|member| keep(&member.tag));
    }

    /// One decoding step for every member: each picks its next token, and
    /// those that end leave the batch.
    pub fn step(&mut self, mut on_event: impl FnMut(&mut T, Event<'_>)) -> Result<(), ModelError> {
        let tokens: Vec<u32> = self.members.iter().map(|m| m.next).collect();
        let mut caches: Vec<&mut KvCache> = self.members.iter_mut().map(|m| &mut m.cache).collect();
        let rows = self.model.decode_batch(&tokens, &mut caches)?;
        let vocab = self.model.config().vocab_size;
        for (member, row) in self.members.iter_mut().zip(rows.chunks_exact(vocab)) {
            member.next = member.sequence.pick(row)?;
            report(&member.sequence, &mut member.tag, &mut on_event);
        }
        let mut i = 0;
        while i < self.members.len() {
            if self.members[i].sequence.is_done() {
                let mut member = self.members.swap_remove(i);
                on_event(&mut member.tag, Event::Done(member.sequence.finish()));
            } else {
                i += 1;
            }
        }
        Ok(())
    }
}

fn report<T>(sequence: &Sequence<'static>, tag: &mut T, on_event: &mut impl FnMut(&mut T, Event<'_>)) {
    if let Some((candidates, chosen)) = sequence.generated().positions.last() {
        on_event(tag, Event::Token { candidates, chosen: *chosen });
    }
}
