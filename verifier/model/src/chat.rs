//! Chat prompts rendered with the GGUF's own template
//! (`tokenizer.chat_template`, Jinja) by minijinja, so that miner and
//! validator build the same prompt text the model was trained on.

use candle_core::quantized::gguf_file::{Content, Value};
use minijinja::Environment;
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Error)]
pub enum ChatError {
    #[error("the model file has no tokenizer.chat_template")]
    NoTemplate,
    #[error("chat template: {0}")]
    Template(#[from] minijinja::Error),
    #[error("a chat needs at least one message")]
    Empty,
}

pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    pub fn from_gguf(content: &Content, bos: String, eos: String) -> Result<Self, ChatError> {
        match content.metadata.get("tokenizer.chat_template") {
            Some(Value::String(source)) => Self::new(source.clone(), bos, eos),
            _ => Err(ChatError::NoTemplate),
        }
    }

    pub fn new(source: String, bos: String, eos: String) -> Result<Self, ChatError> {
        let mut env = Environment::new();
        env.add_template_owned("chat", source)?;
        Ok(Self { env, bos, eos })
    }

    /// The prompt text for `messages`, ending where the assistant's answer
    /// begins.
    pub fn render(&self, messages: &[Message]) -> Result<String, ChatError> {
        if messages.is_empty() {
            return Err(ChatError::Empty);
        }
        let template = self.env.get_template("chat")?;
        let context = minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => self.bos,
            eos_token => self.eos,
        };
        Ok(template.render(context)?)
    }
}
