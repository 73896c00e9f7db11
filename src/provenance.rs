//! What every output records about how it was made: engine, model identity, options. No timestamps or
//! host names, so identical runs give identical bytes.

use crate::weights::ModelRef;

pub const ENGINE: &str = "scfoundation";
pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, Default)]
pub struct Provenance {
    entries: Vec<(String, String)>,
}

impl Provenance {
    pub fn new(step: &str) -> Self {
        let mut p = Self::default();
        p.set("engine", ENGINE);
        p.set("engine_version", ENGINE_VERSION);
        p.set("step", step);
        p
    }

    pub fn with_model(mut self, model: &ModelRef, key: &str) -> Self {
        self.set("model", &model.name);
        self.set("model_sha256", &model.sha256);
        self.set("checkpoint_key", key);
        self
    }

    pub fn set(&mut self, key: &str, value: impl ToString) {
        let value = value.to_string();
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value,
            None => self.entries.push((key.to_string(), value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }
}
