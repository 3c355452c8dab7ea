//! The live calls, by call sid, each with a command inbox.
//!
//! A call's driver enters the call here when it starts and leaves when it
//! ends; in between, anyone holding the engine (REST call control, tests, an
//! operator's tool) can act on the running call with [`Registry::command`].
//! The command goes to the call's driver, which hands it to the sans-I/O
//! [`Call`](super::Call) like any other input, under the same rules as the
//! bot's own messages, and answers whether it was taken.

use std::collections::HashMap;
use std::sync::Mutex;

use protocol::ErrorCode;
use tokio::sync::{mpsc, oneshot};

/// Commands a live call's inbox holds at most; more are refused as busy.
const INBOX: usize = 8;

/// What can be asked of a live call from outside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallCommand {
    /// End the call now (end reason `api_hangup`; a bot gets `stop`
    /// `callended`, targets that ring are cancelled).
    Hangup,
    /// Ring an extension (its registered phones and the numbers the config
    /// adds) and bridge the caller to whoever answers, as the bot's
    /// `session.transfer_extension` does; the bot is told the outcome.
    TransferExtension(String),
    /// Hand the call to another bot, make-before-break, as the bot's
    /// `session.transfer_ws` does.
    Attach(String),
}

/// Why a command was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No live call has this sid (it never existed or has ended).
    #[error("no live call has this call sid")]
    NotLive,
    /// The call's inbox is full; try again.
    #[error("the call is busy with earlier commands; try again")]
    Busy,
    /// The call refused it now (for example a transfer already under way).
    #[error("{message}")]
    Refused {
        /// The same code a bot would get for the same request.
        code: ErrorCode,
        /// Why, for a person.
        message: String,
    },
}

/// A command and where its answer goes.
pub(crate) struct Request {
    pub command: CallCommand,
    pub reply: oneshot::Sender<Result<(), CommandError>>,
}

/// A live call's side of its inbox.
pub(crate) type Inbox = mpsc::Receiver<Request>;

/// The live calls.
#[derive(Default)]
pub struct Registry {
    calls: Mutex<HashMap<String, mpsc::Sender<Request>>>,
}

impl Registry {
    /// A call begins: from now on commands for `call_sid` reach `Inbox`.
    pub(crate) fn enter(&self, call_sid: &str) -> Inbox {
        let (tx, rx) = mpsc::channel(INBOX);
        self.lock().insert(call_sid.to_owned(), tx);
        rx
    }

    /// The call has ended: commands for it are refused as [`CommandError::NotLive`].
    pub(crate) fn leave(&self, call_sid: &str) {
        self.lock().remove(call_sid);
    }

    /// The sids of the calls live now.
    pub fn live(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Asks the live call `call_sid` to carry out `command`, and waits for its
    /// answer (the call answers within one turn of its loop).
    pub async fn command(&self, call_sid: &str, command: CallCommand) -> Result<(), CommandError> {
        let tx = self
            .lock()
            .get(call_sid)
            .cloned()
            .ok_or(CommandError::NotLive)?;
        let (reply, answer) = oneshot::channel();
        tx.try_send(Request { command, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => CommandError::Busy,
                mpsc::error::TrySendError::Closed(_) => CommandError::NotLive,
            })?;
        // A call that ends before it reads the command drops the reply.
        answer.await.unwrap_or(Err(CommandError::NotLive))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Request>>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_reach_a_live_call_and_not_an_ended_one() {
        let reg = Registry::default();
        assert_eq!(
            reg.command("CA1", CallCommand::Hangup).await,
            Err(CommandError::NotLive)
        );
        let mut inbox = reg.enter("CA1");
        assert_eq!(reg.live(), vec!["CA1".to_owned()]);
        let call = tokio::spawn(async move {
            let req = inbox.recv().await.unwrap();
            assert_eq!(req.command, CallCommand::TransferExtension("101".into()));
            let _ = req.reply.send(Ok(()));
            // The call ends with a command unread: its sender hears NotLive.
            let req = inbox.recv().await.unwrap();
            drop(req);
        });
        assert_eq!(
            reg.command("CA1", CallCommand::TransferExtension("101".into()))
                .await,
            Ok(())
        );
        assert_eq!(
            reg.command("CA1", CallCommand::Hangup).await,
            Err(CommandError::NotLive)
        );
        call.await.unwrap();
        reg.leave("CA1");
        assert!(reg.live().is_empty());
    }

    #[tokio::test]
    async fn a_full_inbox_is_busy() {
        let reg = Registry::default();
        let _inbox = reg.enter("CA2");
        let mut waiting = Vec::new();
        for _ in 0..INBOX {
            let tx = reg.lock().get("CA2").cloned().unwrap();
            let (reply, answer) = oneshot::channel();
            tx.try_send(Request {
                command: CallCommand::Hangup,
                reply,
            })
            .unwrap();
            waiting.push(answer);
        }
        assert_eq!(
            reg.command("CA2", CallCommand::Hangup).await,
            Err(CommandError::Busy)
        );
    }
}
