//! A given/when/then test kit for aggregates (feature `testkit`).
//!
//! An aggregate's behaviour is fully described by "after these events, this command produces
//! these events, or this rejection". The kit states exactly that, after cqrs-es's
//! `TestFramework`, but it compares **typed values** (`PartialEq`), never `Display` strings:
//! renaming an error message cannot make a test pass or fail.
//!
//! - **given**: [`AggregateTest::given`] replays past events with [`Aggregate::apply`] onto
//!   [`Default::default`], exactly as the runtime rehydrates an aggregate
//!   ([`AggregateTest::given_no_previous_events`] starts from the empty state);
//! - **when**: [`AggregateTest::when`] runs [`Aggregate::decide`] once and applies the events it
//!   produced to a second replay of the past, so a panicking `apply` fails the test here;
//! - **then**: [`CommandOutcome`] checks the events, the rejection, the resulting state or the
//!   determinism of `decide` and `apply`, or hands back the raw result for custom assertions.
//!
//! It is pure and synchronous: no store, no actors, no async runtime. It exercises only the
//! [`Aggregate`] trait, so a test says nothing about persistence and runs in microseconds.
//!
//! **Failures panic.** This is a test helper and panicking is how Rust tests assert: every
//! `then_*` method panics when its expectation does not hold, with a message that shows the past
//! events, the command, and what was expected and what happened, all with `{:?}`. The methods
//! are `#[track_caller]`, so the panic points at the line of the test. Each `then_*` returns the
//! outcome again, so several expectations can be chained.
//!
//! # Example
//!
//! ```
//! use annals::testkit::AggregateTest;
//! use annals::{Aggregate, DomainEvent};
//! use serde::{Deserialize, Serialize};
//!
//! /// A counter that refuses to go past 10.
//! #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
//! struct Counter {
//!     value: u32,
//! }
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! enum CounterCommand {
//!     Add(u32),
//! }
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! enum CounterEvent {
//!     Added(u32),
//! }
//!
//! impl DomainEvent for CounterEvent {
//!     fn event_type(&self) -> &'static str {
//!         "Added"
//!     }
//! }
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
//! enum CounterRejection {
//!     #[error("the counter would reach {0}, more than 10")]
//!     TooHigh(u32),
//! }
//!
//! impl Aggregate for Counter {
//!     const TYPE: &'static str = "Counter";
//!     type Command = CounterCommand;
//!     type Event = CounterEvent;
//!     type Rejection = CounterRejection;
//!
//!     fn decide(&self, command: &CounterCommand) -> Result<Vec<CounterEvent>, CounterRejection> {
//!         match *command {
//!             CounterCommand::Add(0) => Ok(vec![]),
//!             CounterCommand::Add(n) if self.value + n > 10 => {
//!                 Err(CounterRejection::TooHigh(self.value + n))
//!             }
//!             CounterCommand::Add(n) => Ok(vec![CounterEvent::Added(n)]),
//!         }
//!     }
//!
//!     fn apply(&mut self, event: &CounterEvent) {
//!         match *event {
//!             CounterEvent::Added(n) => self.value += n,
//!         }
//!     }
//! }
//!
//! // Accepted: the events and the state after them.
//! AggregateTest::<Counter>::given(vec![CounterEvent::Added(4)])
//!     .when(CounterCommand::Add(5))
//!     .then_expect_events(vec![CounterEvent::Added(5)])
//!     .then_expect_state(|counter| assert_eq!(counter.value, 9))
//!     .then_expect_deterministic();
//!
//! // Rejected: the typed rejection, compared with `PartialEq`.
//! AggregateTest::<Counter>::given(vec![CounterEvent::Added(8)])
//!     .when(CounterCommand::Add(3))
//!     .then_expect_rejection(CounterRejection::TooHigh(11));
//!
//! // Accepted without events.
//! AggregateTest::<Counter>::given_no_previous_events()
//!     .when(CounterCommand::Add(0))
//!     .then_expect_no_events()
//!     .then_expect_state_eq(Counter { value: 0 });
//!
//! // Anything else: take the raw result.
//! let result = AggregateTest::<Counter>::given_no_previous_events()
//!     .when(CounterCommand::Add(11))
//!     .into_result();
//! assert!(matches!(result, Err(CounterRejection::TooHigh(n)) if n > 10));
//! ```

use std::fmt::{self, Debug};

use crate::aggregate::Aggregate;

/// The "given" step: an aggregate rebuilt from past events, waiting for a command.
///
/// See the [module docs](self) for the pattern and a complete example.
pub struct AggregateTest<A: Aggregate> {
    given: Vec<A::Event>,
    state: A,
}

impl<A: Aggregate> AggregateTest<A> {
    /// Starts from the state that `events` produce when applied, in order, to
    /// [`Default::default`], the way the runtime rehydrates an aggregate from its stream.
    pub fn given(events: impl IntoIterator<Item = A::Event>) -> Self {
        let given: Vec<A::Event> = events.into_iter().collect();
        let state = replay::<A>(&given);
        AggregateTest { given, state }
    }

    /// Starts from an aggregate that has no events yet ([`Default::default`]).
    pub fn given_no_previous_events() -> Self {
        AggregateTest::given(Vec::new())
    }

    /// The state the past events produced, before any command.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// Runs [`Aggregate::decide`] for `command` on the given state and, if it was accepted,
    /// applies the produced events to a fresh replay of the past events (so a panicking
    /// [`Aggregate::apply`] fails the test here). Check the outcome with the `then_*` methods.
    #[must_use = "the outcome is only checked by its `then_*` methods"]
    pub fn when(self, command: A::Command) -> CommandOutcome<A> {
        let AggregateTest { given, state } = self;
        let result = state.decide(&command);
        let after = result.as_ref().ok().map(|events| {
            let mut after = replay::<A>(&given);
            events.iter().for_each(|event| after.apply(event));
            after
        });
        CommandOutcome {
            given,
            command,
            before: state,
            result,
            after,
        }
    }
}

impl<A: Aggregate> Debug for AggregateTest<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregateTest")
            .field("aggregate", &A::TYPE)
            .field("given", &self.given)
            .finish_non_exhaustive()
    }
}

/// The "then" step: what [`Aggregate::decide`] returned for the command under test.
///
/// Every `then_*` method **panics** when its expectation does not hold (this is a test helper;
/// a panic is how a Rust test fails), and otherwise returns the outcome so expectations chain.
/// [`CommandOutcome::result`] and [`CommandOutcome::into_result`] give the raw result instead.
pub struct CommandOutcome<A: Aggregate> {
    given: Vec<A::Event>,
    command: A::Command,
    /// The state the command was decided on.
    before: A,
    result: Result<Vec<A::Event>, A::Rejection>,
    /// The state after the produced events; `None` if the command was rejected.
    after: Option<A>,
}

impl<A: Aggregate> CommandOutcome<A> {
    /// Expects the command to be accepted with exactly `expected` events, in this order.
    ///
    /// # Panics
    ///
    /// If the command was rejected or produced other events.
    ///
    /// ```should_panic
    /// # use annals::testkit::AggregateTest;
    /// # use annals::{Aggregate, DomainEvent};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Default, Serialize, Deserialize)]
    /// # struct Light { on: bool }
    /// # #[derive(Debug, Serialize, Deserialize)]
    /// # struct Toggle;
    /// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    /// # enum LightEvent { SwitchedOn, SwitchedOff }
    /// # impl DomainEvent for LightEvent {
    /// #     fn event_type(&self) -> &'static str { "Switched" }
    /// # }
    /// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
    /// # #[error("never")]
    /// # struct Never;
    /// # impl Aggregate for Light {
    /// #     const TYPE: &'static str = "Light";
    /// #     type Command = Toggle;
    /// #     type Event = LightEvent;
    /// #     type Rejection = Never;
    /// #     fn decide(&self, _: &Toggle) -> Result<Vec<LightEvent>, Never> {
    /// #         Ok(vec![if self.on { LightEvent::SwitchedOff } else { LightEvent::SwitchedOn }])
    /// #     }
    /// #     fn apply(&mut self, event: &LightEvent) {
    /// #         self.on = matches!(event, LightEvent::SwitchedOn);
    /// #     }
    /// # }
    /// // Panics with:
    /// //   Light: expected events, got other events
    /// //     given:    [SwitchedOn]
    /// //     when:     Toggle
    /// //     expected: events [SwitchedOn]
    /// //     actual:   events [SwitchedOff]
    /// AggregateTest::<Light>::given(vec![LightEvent::SwitchedOn])
    ///     .when(Toggle)
    ///     .then_expect_events(vec![LightEvent::SwitchedOn]);
    /// ```
    #[track_caller]
    pub fn then_expect_events(self, expected: Vec<A::Event>) -> Self
    where
        A::Event: PartialEq,
    {
        let what = match &self.result {
            Ok(actual) if *actual == expected => return self,
            Ok(_) => "expected events, got other events",
            Err(_) => "expected events, the command was rejected",
        };
        self.fail(what, &Expected::<A>::Events(expected), &Shown(&self.result))
    }

    /// Expects the command to be accepted without producing any event (a no-op command).
    ///
    /// # Panics
    ///
    /// If the command was rejected or produced events.
    #[track_caller]
    pub fn then_expect_no_events(self) -> Self {
        let what = match &self.result {
            Ok(actual) if actual.is_empty() => return self,
            Ok(_) => "expected no events, got events",
            Err(_) => "expected no events, the command was rejected",
        };
        self.fail(
            what,
            &Expected::<A>::Events(Vec::new()),
            &Shown(&self.result),
        )
    }

    /// Expects the command to be rejected with exactly `expected` (compared with `PartialEq`,
    /// never by its message).
    ///
    /// # Panics
    ///
    /// If the command was accepted or rejected with another rejection.
    #[track_caller]
    pub fn then_expect_rejection(self, expected: A::Rejection) -> Self {
        let what = match &self.result {
            Err(actual) if *actual == expected => return self,
            Err(_) => "expected a rejection, got another",
            Ok(_) => "expected a rejection, the command was accepted",
        };
        self.fail(
            what,
            &Expected::<A>::Rejection(expected),
            &Shown(&self.result),
        )
    }

    /// Expects the command to be accepted, and runs `check` on the state after the produced
    /// events were applied to the given state. `check` asserts what it needs (`assert_eq!`
    /// and friends); the state type need not be `PartialEq` or `Debug` for this.
    ///
    /// # Panics
    ///
    /// If the command was rejected (a rejected command changes no state: check the rejection
    /// instead), or if `check` panics.
    #[track_caller]
    pub fn then_expect_state(self, check: impl FnOnce(&A)) -> Self {
        match &self.after {
            Some(after) => {
                check(after);
                self
            }
            None => self.fail(
                "expected a state, the command was rejected",
                &format_args!("the command to be accepted"),
                &Shown(&self.result),
            ),
        }
    }

    /// Expects the command to be accepted and the state after its events to equal `expected`.
    ///
    /// # Panics
    ///
    /// If the command was rejected or the state differs.
    #[track_caller]
    // By value so that callers can write the expected state as a literal; it is only compared.
    #[allow(clippy::needless_pass_by_value)]
    pub fn then_expect_state_eq(self, expected: A) -> Self
    where
        A: PartialEq + Debug,
    {
        match &self.after {
            Some(after) if *after == expected => self,
            Some(after) => self.fail("expected a state, got another", &expected, after),
            None => self.fail(
                "expected a state, the command was rejected",
                &format_args!("state {expected:?}"),
                &Shown(&self.result),
            ),
        }
    }

    /// Expects `decide` and `apply` to be deterministic, as replay requires: the past events
    /// replayed again give an equal state; deciding the command again, on that replay and on
    /// the state it was first decided on, gives an equal result; and applying the produced
    /// events to two separate replays gives equal states.
    ///
    /// This catches hidden inputs (clocks, random numbers, interior mutability, iteration over
    /// a `HashMap` whose order differs between instances) that would make a rehydrated
    /// aggregate disagree with the one that decided.
    ///
    /// # Panics
    ///
    /// If any of the comparisons above differs; "expected" shows the first computation and
    /// "actual" the second.
    #[track_caller]
    pub fn then_expect_deterministic(self) -> Self
    where
        A: PartialEq + Debug,
        A::Event: PartialEq,
    {
        let replayed = replay::<A>(&self.given);
        if replayed != self.before {
            self.fail(
                "replaying the given events twice gave different states",
                &self.before,
                &replayed,
            );
        }
        for (which, state) in [
            ("the same state", &self.before),
            ("a fresh replay", &replayed),
        ] {
            let again = state.decide(&self.command);
            if again != self.result {
                self.fail(
                    &format!("deciding the command again on {which} gave another result"),
                    &Shown(&self.result),
                    &Shown(&again),
                );
            }
        }
        if let (Ok(events), Some(after)) = (&self.result, &self.after) {
            let mut second = replay::<A>(&self.given);
            events.iter().for_each(|event| second.apply(event));
            if second != *after {
                self.fail(
                    "applying the produced events to two replays gave different states",
                    after,
                    &second,
                );
            }
        }
        self
    }

    /// The raw result of [`Aggregate::decide`], for assertions the `then_*` methods do not
    /// cover.
    pub fn result(&self) -> &Result<Vec<A::Event>, A::Rejection> {
        &self.result
    }

    /// The state after the produced events (`None` if the command was rejected).
    pub fn state_after(&self) -> Option<&A> {
        self.after.as_ref()
    }

    /// Consumes the outcome and returns the raw result of [`Aggregate::decide`].
    pub fn into_result(self) -> Result<Vec<A::Event>, A::Rejection> {
        self.result
    }

    /// Panics with the context of the test: past events, command, expected and actual.
    #[track_caller]
    fn fail(&self, what: &str, expected: &dyn Debug, actual: &dyn Debug) -> ! {
        panic!(
            "{}: {what}\n  given:    {:?}\n  when:     {:?}\n  expected: {expected:?}\n  \
             actual:   {actual:?}",
            A::TYPE,
            self.given,
            self.command,
        )
    }
}

impl<A: Aggregate> Debug for CommandOutcome<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandOutcome")
            .field("aggregate", &A::TYPE)
            .field("given", &self.given)
            .field("command", &self.command)
            .field("result", &self.result)
            .finish_non_exhaustive()
    }
}

/// What an expectation wanted, for the failure message; owns it so that the `then_*` methods
/// take their expectations by value.
enum Expected<A: Aggregate> {
    Events(Vec<A::Event>),
    Rejection(A::Rejection),
}

impl<A: Aggregate> Debug for Expected<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Events(events) => write!(f, "events {events:?}"),
            Expected::Rejection(rejection) => write!(f, "rejection {rejection:?}"),
        }
    }
}

/// A result of `decide` as the failure messages show it: `events [..]` or `rejection ..`.
struct Shown<'a, E, R>(&'a Result<Vec<E>, R>);

impl<E: Debug, R: Debug> Debug for Shown<'_, E, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(events) => write!(f, "events {events:?}"),
            Err(rejection) => write!(f, "rejection {rejection:?}"),
        }
    }
}

/// The state `events` produce from [`Default::default`], as rehydration computes it.
fn replay<A: Aggregate>(events: &[A::Event]) -> A {
    let mut state = A::default();
    events.iter().for_each(|event| state.apply(event));
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DomainEvent;
    use serde::{Deserialize, Serialize};
    use std::cell::Cell;

    /// A stack of numbers; `Push(0)` is a no-op, pushing beyond three is refused.
    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Stack {
        items: Vec<u8>,
        /// Counts decisions: makes `decide` non-deterministic when `flaky` is set.
        #[serde(skip)]
        decisions: Decisions,
        flaky: bool,
    }

    /// A hidden input of `decide`, left out of equality like any hidden input would be.
    #[derive(Debug, Default)]
    struct Decisions(Cell<u8>);

    impl PartialEq for Decisions {
        fn eq(&self, _: &Decisions) -> bool {
            true
        }
    }

    #[derive(Debug, Serialize, Deserialize)]
    enum StackCommand {
        Push(u8),
        BecomeFlaky,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum StackEvent {
        Pushed(u8),
        BecameFlaky,
    }

    impl DomainEvent for StackEvent {
        fn event_type(&self) -> &'static str {
            "StackEvent"
        }
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
    enum StackRejection {
        #[error("the stack is full")]
        Full,
    }

    impl Aggregate for Stack {
        const TYPE: &'static str = "Stack";
        type Command = StackCommand;
        type Event = StackEvent;
        type Rejection = StackRejection;

        fn decide(&self, command: &StackCommand) -> Result<Vec<StackEvent>, StackRejection> {
            let decisions = &self.decisions.0;
            decisions.set(decisions.get().saturating_add(1));
            match *command {
                StackCommand::BecomeFlaky => Ok(vec![StackEvent::BecameFlaky]),
                StackCommand::Push(_) if self.flaky => {
                    Ok(vec![StackEvent::Pushed(decisions.get())])
                }
                StackCommand::Push(0) => Ok(vec![]),
                StackCommand::Push(_) if self.items.len() >= 3 => Err(StackRejection::Full),
                StackCommand::Push(n) => Ok(vec![StackEvent::Pushed(n)]),
            }
        }

        fn apply(&mut self, event: &StackEvent) {
            match *event {
                StackEvent::Pushed(n) => self.items.push(n),
                StackEvent::BecameFlaky => self.flaky = true,
            }
        }
    }

    fn stack(items: &[u8]) -> Stack {
        Stack {
            items: items.to_vec(),
            ..Stack::default()
        }
    }

    /// The panic message of `f`, which must panic.
    fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let payload = match std::panic::catch_unwind(f) {
            Ok(()) => panic!("expected a panic"),
            Err(payload) => payload,
        };
        match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(_) => panic!("expected a formatted panic message"),
        }
    }

    #[test]
    fn accepted_command_passes_event_and_state_expectations() {
        let outcome = AggregateTest::<Stack>::given(vec![StackEvent::Pushed(1)])
            .when(StackCommand::Push(2))
            .then_expect_events(vec![StackEvent::Pushed(2)])
            .then_expect_state(|s| assert_eq!(s.items, [1, 2]))
            .then_expect_state_eq(stack(&[1, 2]))
            .then_expect_deterministic();
        assert_eq!(outcome.state_after(), Some(&stack(&[1, 2])));
        assert_eq!(outcome.into_result(), Ok(vec![StackEvent::Pushed(2)]));
    }

    #[test]
    fn given_replays_past_events() {
        let test =
            AggregateTest::<Stack>::given(vec![StackEvent::Pushed(4), StackEvent::Pushed(5)]);
        assert_eq!(test.state(), &stack(&[4, 5]));
        assert_eq!(
            AggregateTest::<Stack>::given_no_previous_events().state(),
            &stack(&[])
        );
    }

    #[test]
    fn rejection_is_compared_as_a_value() {
        let full = vec![
            StackEvent::Pushed(1),
            StackEvent::Pushed(2),
            StackEvent::Pushed(3),
        ];
        let outcome = AggregateTest::<Stack>::given(full)
            .when(StackCommand::Push(4))
            .then_expect_rejection(StackRejection::Full)
            .then_expect_deterministic();
        assert_eq!(outcome.result(), &Err(StackRejection::Full));
        assert_eq!(outcome.state_after(), None);
    }

    #[test]
    fn no_op_command_passes_no_events() {
        AggregateTest::<Stack>::given_no_previous_events()
            .when(StackCommand::Push(0))
            .then_expect_no_events()
            .then_expect_state_eq(stack(&[]));
    }

    #[test]
    fn wrong_events_panic_with_expected_and_actual() {
        let message = panic_message(|| {
            let _ = AggregateTest::<Stack>::given(vec![StackEvent::Pushed(1)])
                .when(StackCommand::Push(2))
                .then_expect_events(vec![StackEvent::Pushed(3)]);
        });
        assert!(
            message.starts_with("Stack: expected events, got other events"),
            "{message}"
        );
        assert!(message.contains("given:    [Pushed(1)]"), "{message}");
        assert!(message.contains("when:     Push(2)"), "{message}");
        assert!(
            message.contains("expected: events [Pushed(3)]"),
            "{message}"
        );
        assert!(
            message.contains("actual:   events [Pushed(2)]"),
            "{message}"
        );
    }

    #[test]
    fn unexpected_acceptance_or_rejection_panics() {
        let full = || {
            vec![
                StackEvent::Pushed(1),
                StackEvent::Pushed(2),
                StackEvent::Pushed(3),
            ]
        };
        let message = panic_message(|| {
            let _ = AggregateTest::<Stack>::given(full())
                .when(StackCommand::Push(4))
                .then_expect_events(vec![StackEvent::Pushed(4)]);
        });
        assert!(message.contains("the command was rejected"), "{message}");
        assert!(message.contains("actual:   rejection Full"), "{message}");

        let message = panic_message(|| {
            let _ = AggregateTest::<Stack>::given_no_previous_events()
                .when(StackCommand::Push(1))
                .then_expect_rejection(StackRejection::Full);
        });
        assert!(message.contains("the command was accepted"), "{message}");
        assert!(message.contains("expected: rejection Full"), "{message}");

        let message = panic_message(|| {
            let _ = AggregateTest::<Stack>::given_no_previous_events()
                .when(StackCommand::Push(1))
                .then_expect_no_events();
        });
        assert!(
            message.contains("expected no events, got events"),
            "{message}"
        );

        let message = panic_message(|| {
            let _ = AggregateTest::<Stack>::given(full())
                .when(StackCommand::Push(1))
                .then_expect_state(|_| {});
        });
        assert!(
            message.contains("expected a state, the command was rejected"),
            "{message}"
        );
    }

    #[test]
    fn wrong_state_panics_with_both_states() {
        let message = panic_message(|| {
            let _ = AggregateTest::<Stack>::given_no_previous_events()
                .when(StackCommand::Push(1))
                .then_expect_state_eq(stack(&[9]));
        });
        assert!(message.contains("items: [9]"), "{message}");
        assert!(message.contains("items: [1]"), "{message}");
    }

    #[test]
    fn non_deterministic_decide_is_caught() {
        let message = panic_message(|| {
            let _ = AggregateTest::<Stack>::given(vec![StackEvent::BecameFlaky])
                .when(StackCommand::Push(1))
                .then_expect_deterministic();
        });
        assert!(message.contains("deciding the command again"), "{message}");
    }
}
