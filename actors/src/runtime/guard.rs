//! The supervision guard: every handler and every future an actor spawns runs under it.
//!
//! A panic that unwinds out of an actix handler closes the actor's mailbox for good, so a
//! supervised actor would never be restarted. The guard catches the panic instead, logs
//! it, stops the actor (its [`actix::Supervisor`] then calls `restarting` and `started`
//! again, which re-list and re-subscribe) and hands the caller an error rather than a
//! reply that never comes.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use actix::prelude::*;
use actix::SpawnHandle;
use futures::FutureExt;

/// A panic caught by the guard.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{actor} panicked: {message}; its supervisor restarts it")]
pub struct Panicked {
    /// The actor's type without its module path, or the task's name.
    pub actor: &'static str,
    /// The panic's message, when it had one.
    pub message: String,
}

impl Panicked {
    fn new(actor: &'static str, payload: Box<dyn Any + Send>) -> Self {
        Panicked {
            actor,
            message: panic_message(payload.as_ref()),
        }
    }
}

/// Run `work` on the actor. A panic in it stops the actor, so that its supervisor restarts
/// it, and comes back as [`Panicked`].
///
/// `AssertUnwindSafe` is sound here because nothing observes the actor's state after the
/// panic: the actor is stopped and its supervisor rebuilds that state in `restarting`.
pub fn guard<A, R>(
    act: &mut A,
    ctx: &mut A::Context,
    work: impl FnOnce(&mut A, &mut A::Context) -> R,
) -> Result<R, Panicked>
where
    A: Actor,
    A::Context: ActorContext,
{
    match std::panic::catch_unwind(AssertUnwindSafe(|| work(act, ctx))) {
        Ok(r) => Ok(r),
        Err(payload) => {
            let panicked = Panicked::new(short_type_name::<A>(), payload);
            stop(ctx, &panicked);
            Err(panicked)
        }
    }
}

/// A future that yields [`Panicked`] instead of unwinding when it panics, for tasks that
/// run outside any actor (an informer's loop, which its owner then starts again); an
/// actor's own work goes through [`spawn_guarded`], which also stops the actor.
pub async fn catch<F: Future>(what: &'static str, fut: F) -> Result<F::Output, Panicked> {
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(|payload| Panicked::new(what, payload))
}

/// Spawn `fut` in the actor's context and hand its output to `then`, both under the guard:
/// a panic in either stops the actor so that its supervisor restarts it.
pub fn spawn_guarded<A, F>(
    act: &mut A,
    ctx: &mut A::Context,
    fut: F,
    then: impl FnOnce(F::Output, &mut A, &mut A::Context) + 'static,
) -> SpawnHandle
where
    A: Actor,
    A::Context: ActorContext + AsyncContext<A>,
    F: Future + 'static,
{
    let caught = AssertUnwindSafe(fut).catch_unwind();
    ctx.spawn(caught.into_actor(act).map(move |res, act, ctx| match res {
        Ok(out) => {
            // The error is logged and the actor stopped by the guard; nothing else to do.
            let _ = guard(act, ctx, move |act, ctx| then(out, act, ctx));
        }
        Err(payload) => stop(ctx, &Panicked::new(short_type_name::<A>(), payload)),
    }))
}

/// Fault injection: make a supervised actor panic inside a handler, as a bug would. Every
/// supervised actor takes it (the store and the scheduler answer with an error of theirs),
/// so a test can check that each comes back.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct InjectPanic;

/// Handle [`InjectPanic`]: panic under the guard.
pub fn inject_panic<A>(act: &mut A, ctx: &mut A::Context)
where
    A: Actor,
    A::Context: ActorContext,
{
    let _ = guard(act, ctx, |_, _| panic!("injected panic"));
}

/// `ctx.run_interval` under the guard: a tick that panics stops the actor for its
/// supervisor, like a handler that panics.
pub fn run_interval_guarded<A>(
    ctx: &mut Context<A>,
    every: std::time::Duration,
    mut tick: impl FnMut(&mut A, &mut Context<A>) + 'static,
) -> SpawnHandle
where
    A: Actor<Context = Context<A>>,
{
    ctx.run_interval(every, move |act, ctx| {
        let _ = guard(act, ctx, |act, ctx| tick(act, ctx));
    })
}

/// `ctx.run_later` under the guard.
pub fn run_later_guarded<A>(
    ctx: &mut Context<A>,
    after: std::time::Duration,
    work: impl FnOnce(&mut A, &mut Context<A>) + 'static,
) -> SpawnHandle
where
    A: Actor<Context = Context<A>>,
{
    ctx.run_later(after, move |act, ctx| {
        let _ = guard(act, ctx, work);
    })
}

fn stop<C: ActorContext>(ctx: &mut C, panicked: &Panicked) {
    tracing::error!(
        actor = panicked.actor,
        panic = %panicked.message,
        "actor panicked; stopping it so that its supervisor restarts it"
    );
    ctx.stop();
}

/// The message a panic carried, when it had one.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// The actor's type without its module path (`Kubelet`, `Controller<...>`).
fn short_type_name<A>() -> &'static str {
    let full = std::any::type_name::<A>();
    let generic = full.find('<').unwrap_or(full.len());
    let start = full[..generic].rfind("::").map_or(0, |i| i + 2);
    &full[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// An actor whose work panics on demand, counting its starts.
    struct Fragile {
        starts: Arc<AtomicUsize>,
    }

    impl Actor for Fragile {
        type Context = Context<Self>;
        fn started(&mut self, _: &mut Self::Context) {
            self.starts.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Supervised for Fragile {}

    #[derive(Message)]
    #[rtype(result = "Result<u32, Panicked>")]
    struct Work {
        panic: bool,
    }

    impl Handler<Work> for Fragile {
        type Result = Result<u32, Panicked>;
        fn handle(&mut self, msg: Work, ctx: &mut Self::Context) -> Self::Result {
            guard(self, ctx, |_, _| {
                if msg.panic {
                    panic!("bad input");
                }
                7
            })
        }
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct SpawnPanic;

    impl Handler<SpawnPanic> for Fragile {
        type Result = ();
        fn handle(&mut self, _: SpawnPanic, ctx: &mut Self::Context) {
            spawn_guarded(self, ctx, async { panic!("in a future") }, |_: (), _, _| {});
        }
    }

    async fn wait_for_starts(starts: &AtomicUsize, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while starts.load(Ordering::SeqCst) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "actor not restarted"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[actix_rt::test]
    async fn a_panic_in_a_handler_is_an_error_for_the_caller_and_a_restart_for_the_actor() {
        let starts = Arc::new(AtomicUsize::new(0));
        let s = starts.clone();
        let addr = Supervisor::start(move |_| Fragile { starts: s });
        let err = addr
            .send(Work { panic: true })
            .await
            .expect("the mailbox stays open")
            .expect_err("the panic comes back as an error");
        assert_eq!(err.actor, "Fragile");
        assert_eq!(err.message, "bad input");
        wait_for_starts(&starts, 2).await;
        let ok = addr.send(Work { panic: false }).await.expect("mailbox");
        assert_eq!(ok.ok(), Some(7));
    }

    #[actix_rt::test]
    async fn a_panic_in_a_spawned_future_restarts_the_actor() {
        let starts = Arc::new(AtomicUsize::new(0));
        let s = starts.clone();
        let addr = Supervisor::start(move |_| Fragile { starts: s });
        addr.send(SpawnPanic).await.expect("mailbox");
        wait_for_starts(&starts, 2).await;
        assert!(addr.send(Work { panic: false }).await.is_ok());
    }

    #[actix_rt::test]
    async fn catch_turns_a_panicking_future_into_an_error() {
        let r = catch("task", async { panic!("boom") }).await;
        assert_eq!(r.map_err(|p| p.message).err().as_deref(), Some("boom"));
        assert_eq!(catch("task", async { 1 }).await.ok(), Some(1));
    }

    #[test]
    fn type_names_are_shortened_to_the_type_and_its_parameters() {
        assert_eq!(short_type_name::<Fragile>(), "Fragile");
        assert_eq!(
            short_type_name::<Vec<String>>(),
            "Vec<alloc::string::String>"
        );
    }
}
