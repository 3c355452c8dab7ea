//! The flow endpoint: a flow's run, heard by the caller.

use codecs::pcm::Frame;

use super::Endpoint;
use crate::flow::FlowRun;

/// A flow that has the caller. Its prompts are what it says; what the
/// caller says reaches no one (the caller's keys go to the run as events).
pub(crate) struct FlowEp {
    pub run: FlowRun,
}

impl Endpoint for FlowEp {
    fn step(&mut self, _heard: &Frame, said: &mut Frame) {
        self.run.tick(said);
    }
}
