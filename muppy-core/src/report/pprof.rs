//! pprof heap profiles (`--format pprof`): gzipped profile.proto, shaped as Go writes them.

use std::io;

use super::{Facts, Print, ProcView, ReportError, ViewOptions};
use crate::{
    analysis::{Diff, LeakReport, RefReport},
    model::Identity,
};

/// Writes `--format pprof` reports.
pub struct PprofPrinter<W> {
    opts: ViewOptions,
    out: W,
}

impl<W: io::Write> PprofPrinter<W> {
    /// A printer writing into `out`.
    pub fn new(opts: ViewOptions, out: W) -> Self {
        PprofPrinter { opts, out }
    }

    fn unsupported(&self, what: &'static str) -> ReportError {
        ReportError::Unsupported {
            format: self.opts.format.name(),
            what,
            hint: "not written yet",
        }
    }
}

impl<W: io::Write> Print for PprofPrinter<W> {
    fn view(&mut self, _p: &ProcView, _facts: &Facts) -> Result<(), ReportError> {
        self.out.flush()?;
        Err(self.unsupported("a view"))
    }

    fn processes(&mut self, _procs: &[ProcView], _facts: &Facts) -> Result<(), ReportError> {
        Err(self.unsupported("several processes"))
    }

    fn ended(&mut self, _p: &ProcView) -> Result<(), ReportError> {
        Ok(())
    }

    fn diff(&mut self, _d: &Diff, _who: Option<&Identity>) -> Result<(), ReportError> {
        Err(self.unsupported("a diff"))
    }

    fn leaks(&mut self, _r: &LeakReport) -> Result<(), ReportError> {
        Err(self.unsupported("a leak report"))
    }

    fn referrers(&mut self, _r: &RefReport) -> Result<(), ReportError> {
        Err(self.unsupported("referrers"))
    }
}
