//! The live calls, by call sid, each with a command inbox.
//!
//! A call's driver enters the call here when it starts and leaves when it
//! ends; in between, anyone holding the engine (REST call control, tests, an
//! operator's tool) can act on the running call with [`Registry::command`].
//! The command goes to the call's driver, which hands it to the sans-I/O
//! [`Call`](super::Call) like any other input, under the same rules as the
//! bot's own messages, and answers whether it was taken.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use protocol::ErrorCode;
use tokio::sync::oneshot;

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

/// One live call's inbox, shared by the registry (which fills it) and the
/// call's driver (which empties it). Small and allocation-free until a
/// command comes: a call that never gets one pays a few atomics per wake.
#[derive(Default)]
struct Slot {
    queue: Mutex<VecDeque<Request>>,
    /// Commands queued, read without the lock on every wake of the call.
    queued: AtomicUsize,
    waker: AtomicWaker,
    /// The call has ended: nothing more is taken.
    closed: AtomicBool,
}

impl Slot {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Request>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A live call's side of its inbox.
pub(crate) struct Inbox {
    slot: Arc<Slot>,
    /// The call's task is registered to be woken by the next command. A
    /// task's waker stays good for the task's life, so it is registered once
    /// and again only after a wake has used it up.
    registered: bool,
}

impl Inbox {
    /// Ready with the next command; pending (the call's task woken later)
    /// when there is none.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Request> {
        if self.slot.queued.load(Ordering::Acquire) == 0 {
            if self.registered {
                return Poll::Pending;
            }
            self.slot.waker.register(cx.waker());
            self.registered = true;
            // A command queued between the check and the registration.
            if self.slot.queued.load(Ordering::Acquire) == 0 {
                return Poll::Pending;
            }
        }
        // The command's wake (if any) used the registration up.
        self.registered = false;
        let mut queue = self.slot.queue();
        match queue.pop_front() {
            Some(req) => {
                self.slot.queued.store(queue.len(), Ordering::Release);
                Poll::Ready(req)
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // Commands still queued are answered NotLive (their replies dropped).
        self.slot.closed.store(true, Ordering::Release);
        self.slot.queue().clear();
    }
}

/// The live calls.
#[derive(Default)]
pub struct Registry {
    calls: Mutex<HashMap<String, Arc<Slot>>>,
}

impl Registry {
    /// A call begins: from now on commands for `call_sid` reach the [`Inbox`].
    pub(crate) fn enter(&self, call_sid: &str) -> Inbox {
        let slot = Arc::new(Slot::default());
        self.lock().insert(call_sid.to_owned(), slot.clone());
        Inbox {
            slot,
            registered: false,
        }
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
        let slot = self
            .lock()
            .get(call_sid)
            .cloned()
            .ok_or(CommandError::NotLive)?;
        let (reply, answer) = oneshot::channel();
        {
            let mut queue = slot.queue();
            if slot.closed.load(Ordering::Acquire) {
                return Err(CommandError::NotLive);
            }
            if queue.len() >= INBOX {
                return Err(CommandError::Busy);
            }
            queue.push_back(Request { command, reply });
            slot.queued.store(queue.len(), Ordering::Release);
        }
        slot.waker.wake();
        // A call that ends before it reads the command drops the reply.
        answer.await.unwrap_or(Err(CommandError::NotLive))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn recv(inbox: &mut Inbox) -> Request {
        std::future::poll_fn(|cx| inbox.poll_recv(cx)).await
    }

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
            let req = recv(&mut inbox).await;
            assert_eq!(req.command, CallCommand::TransferExtension("101".into()));
            let _ = req.reply.send(Ok(()));
            // The call ends with a command unread: its sender hears NotLive.
            let _req = recv(&mut inbox).await;
            drop(inbox);
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
    async fn a_full_inbox_is_busy_and_a_closed_one_not_live() {
        let reg = std::sync::Arc::new(Registry::default());
        let inbox = reg.enter("CA2");
        let mut waiting = Vec::new();
        for _ in 0..INBOX {
            let reg = reg.clone();
            waiting.push(tokio::spawn(async move {
                reg.command("CA2", CallCommand::Hangup).await
            }));
        }
        while inbox.slot.queued.load(Ordering::Acquire) < INBOX {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            reg.command("CA2", CallCommand::Hangup).await,
            Err(CommandError::Busy)
        );
        drop(inbox);
        for w in waiting {
            assert_eq!(w.await.unwrap(), Err(CommandError::NotLive));
        }
        assert_eq!(
            reg.command("CA2", CallCommand::Hangup).await,
            Err(CommandError::NotLive)
        );
    }
}
