//! The sections of sensor kinds that declare their own (`Sensor::section`): the contract a kind's
//! section parser gets ([`SectionReader`]) and what it returns ([`SensorSection`]).
//!
//! The first four kinds (freshness, volume, schema, distribution) are read by `sensors.rs` into
//! typed fields of [`TableConfig`](crate::config::TableConfig), because lineage, the status page
//! and the demo read those fields. A kind added later keeps its section type, keys and parser
//! in its own module; the parser here finds it through the sensor registry, checks its keys,
//! hands it a reader and keeps what it returns in `TableConfig::sections`.

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use crate::config::reader::{Key, Reader, Section, join};
use crate::config::{Defaults, SensorSettings};

/// A kind's parsed section. `Any` lets the kind get its own type back
/// ([`TableConfig::section`](crate::config::TableConfig::section)).
pub trait SensorSection: Any + Debug + Send + Sync {
    /// The scoring settings resolved from the section's common keys and `[defaults]`.
    fn settings(&self) -> &SensorSettings;
}

/// How a kind's section is read and documented.
pub struct SectionSpec {
    /// The meaning of the kind's row under `[tables."ns.name"]` in docs/configuration.md.
    pub doc: &'static str,
    /// The section's own keys (the common sensor keys are accepted too).
    pub keys: &'static [Key],
    /// The key holding the point count of the rolling window, if the section has one.
    pub window_key: Option<&'static str>,
    /// Reads the section; `None` when a problem was recorded and nothing usable remains.
    pub parse: fn(&mut SectionReader<'_, '_, '_>) -> Option<Arc<dyn SensorSection>>,
}

/// Typed getters for one kind's section. Each records a problem at the key's file:line:col when
/// the value is of the wrong type or out of range, and returns `None` then or when the key is
/// absent, so a parser reads `reader.duration("max_age").unwrap_or(DEFAULT)`.
pub struct SectionReader<'r, 'a, 'd> {
    reader: &'r mut Reader<'a>,
    section: &'r Section<'d>,
    defaults: &'r Defaults,
    window_key: Option<&'static str>,
}

impl<'r, 'a, 'd> SectionReader<'r, 'a, 'd> {
    pub(super) fn new(
        reader: &'r mut Reader<'a>,
        section: &'r Section<'d>,
        defaults: &'r Defaults,
        window_key: Option<&'static str>,
    ) -> SectionReader<'r, 'a, 'd> {
        SectionReader { reader, section, defaults, window_key }
    }

    /// The scoring settings of the section, falling back to `[defaults]`.
    pub fn settings(&mut self) -> SensorSettings {
        self.reader.settings(self.section, self.defaults, self.window_key)
    }

    pub fn string(&mut self, key: &str) -> Option<String> {
        self.reader.string(self.section, key)
    }

    pub fn boolean(&mut self, key: &str) -> Option<bool> {
        self.reader.boolean(self.section, key)
    }

    pub fn integer(&mut self, key: &str, min: i64, max: i64) -> Option<i64> {
        self.reader.integer(self.section, key, min, max)
    }

    /// A number that `check` accepts (`Err` is the problem's text).
    pub fn number(&mut self, key: &str, check: impl Fn(f64) -> Result<(), String>) -> Option<f64> {
        self.reader.number(self.section, key, check)
    }

    pub fn duration(&mut self, key: &str) -> Option<Duration> {
        self.reader.duration(self.section, key)
    }

    /// A problem with the value of `key` (e.g. two keys that disagree), at its place in the file.
    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        let span = Reader::value_span(self.section, key);
        self.reader.problem_at(span, &join(&self.section.path, key), message);
    }
}
