----------------------------- MODULE GroupCommit -----------------------------
(***************************************************************************)
(* The group-commit protocol of src/protocol.rs, step for step.            *)
(*                                                                         *)
(* Callers share one mutex-protected `State`.  The first caller to find    *)
(* the phase Idle leads: it runs the fsync outside the lock while later    *)
(* callers wait on the condition variable of the fsync that will serve     *)
(* them (groups[generation % 2]).  When the fsync ends, the leader wakes   *)
(* the callers it served (WakeRiders) and one caller of the next group     *)
(* (HandOff), which finds the phase Idle and leads in turn.                *)
(*                                                                         *)
(* Granularity.  Each action is one Rust function of protocol.rs (the      *)
(* names match: `join_group` is JoinGroup, and so on; docs/spec-map.md has *)
(* the table).  The mutex is the variable `lock`: an action inside a       *)
(* critical section requires `lock = t`, so the steps of one critical      *)
(* section can never be interleaved with another thread's, exactly as in   *)
(* the code.  Steps that take no lock (a wait ending, the fsync itself,    *)
(* the lock-free FastPath) also wait for `lock = NoThread`: they touch     *)
(* nothing a critical section reads in between its steps, so running them  *)
(* before or after the whole critical section covers every real order      *)
(* (a standard reduction), and the intermediate states stay few.           *)
(*                                                                         *)
(* Condition variables are wait sets (lemmy/BlockingQueue): `wait` puts    *)
(* the thread in the set and releases the lock in one step; `notify_one`   *)
(* removes any one member (a free choice), `notify_all` removes all; a     *)
(* thread out of the set must take the lock again before it runs.  A wait  *)
(* may also end spuriously or because its deadline passed (untimed: either *)
(* may happen at any moment), when the constants allow it.                 *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets, TLC

CONSTANTS
    Threads,    \* the callers (model values; symmetric)
    NoThread,   \* what `lock` holds when nobody is in a critical section
    Api,        \* "closure": FsyncManager::fsync; "lsn": mark_written + commit
    MaxWrites,  \* records written in all, to keep the state space finite
    Gathering,  \* Config::gathering(): "off", "fixed" (the reference's) or "adaptive"
    Threshold,  \* Gathering::Fixed { threshold }: companions a fixed leader waits for
    Timeouts,   \* TRUE: a waiter's deadline may pass (Config::waiter_timeout)
    Spurious,   \* TRUE: a wait may end without a notify
    Failures,   \* TRUE: an fsync may return an error
    Panics,     \* TRUE: an fsync closure may panic
    Recommits,  \* TRUE (LSN API): a caller may commit an LSN it committed before
    Bug         \* "none", or a bug planted on purpose (below)

ASSUME Api \in {"closure", "lsn"}
ASSUME MaxWrites \in Nat /\ Threshold \in Nat \ {0}
ASSUME Gathering \in {"off", "fixed", "adaptive"}
ASSUME {Timeouts, Spurious, Failures, Panics, Recommits} \subseteq BOOLEAN
ASSUME Bug \in {"none", "NoPoison", "NoHandOff", "TargetAtFinish", "FailureFirst",
                "AckAtStart", "NotifyBeforeIdle", "WedgeOnError", "WedgeOnPanic",
                "WakeBeforePoison", "OrphanedGroup", "HandOffWrongGroup",
                "StealLead", "SoloFsyncOnTimeout", "TargetBeforeGathering"}

(* Planted bugs: each has a config that must fail (GroupCommitBug*.cfg), to   *)
(* show that the properties can fail.  Each protocol-level bug of verify/bugs/ *)
(* is one of them (its `tlc` key names the config; verify/planted runs it).   *)
(*   NoHandOff       FinishFsync sends no notify_one to the next group (F1)  *)
(*   NoPoison        a failed fsync does not mark the manager failed (F4)    *)
(*   TargetAtFinish  FinishFsync sets durable to `written` at the finish,    *)
(*                   not to the target fixed when the fsync started          *)
(*   FailureFirst    Decide tests the failure before a waiter's own record   *)
(*                   (the bug loom found in an early State::decide)          *)
(*   AckAtStart      StartFsync raises durable to its target at once         *)
(*   NotifyBeforeIdle  FinishFsync notifies, lets go of the lock, and sets   *)
(*                   the phase Idle in a later critical section (SetIdle)    *)
(*   WedgeOnError    FailFsync records nothing: phase stays Syncing          *)
(*   WedgeOnPanic    PanicFsync records nothing: phase stays Syncing (F6)    *)
(*   WakeBeforePoison  FailFsync sets Idle and hands off, lets go of the     *)
(*                   lock, and poisons in a later critical section           *)
(*                   (LatePoison)                                            *)
(*   OrphanedGroup   a waiter promoted to lead sets nextGroup to 0 (F2)      *)
(*   HandOffWrongGroup  HandOff notifies the group just served (F2)          *)
(*   StealLead       a woken waiter told to wait leads instead (F3)          *)
(*   SoloFsyncOnTimeout  a waiter whose deadline passed runs an fsync of its *)
(*                   own, outside the protocol, and returns its result (F7)  *)
(*   TargetBeforeGathering  BecomeLeader fixes the fsync's target before     *)
(*                   the leader gathers; StartFsync keeps it                 *)

Records == 1..MaxWrites   \* a record is named by its LSN

VARIABLES
    \* --- protocol.rs `State`, guarded by the mutex; the same names, camelCase ---
    written,    \* highest LSN written (closure API: callers arrived so far)
    durable,    \* highest LSN covered by a completed, successful fsync
    phase,      \* "Idle" | "Gathering" | "Syncing"
    target,     \* Phase::Syncing { target }: what the fsync in flight covers, else 0
    started,    \* fsyncs started so far; the one in flight has this number
    riders,     \* waiters counted in the group of the fsync in flight
    nextGroup,  \* waiters counted in the group of the fsync after it
    failed,     \* State::failure.is_some(): the manager is poisoned
    gatherUntil,    \* companions a gathering leader waits for (set by Gather, kept)
    recentlyActive, \* callers around the last successful fsync: those it served and
                    \* those queued behind it (what adaptive gathering waits for)
    \* --- the mutex and the condition variables ---
    lock,       \* the thread inside a critical section, or NoThread
    asleep,     \* asleep[p]: threads blocked on groups[p] (p = generation % 2)
    gatherers,  \* threads blocked on `gatherer` (a gathering leader, at most one)
    \* --- each caller's locals ---
    pc,         \* the step the thread takes next (see PCs below)
    lsn,        \* the LSN of its current (or last) request
    gen,        \* Next::Wait { generation }: the fsync it waits for (0 if not waiting);
                \* for a leader, the generation of its own fsync
    result,     \* how its last call ended: "none" (running), "ok", "err", "panic"
    \* --- the disk, which the protocol never sees ---
    onDisk,     \* records a completed fsync made durable
    lost,       \* records a failed fsync dropped (Linux after EIO): never durable again
    \* --- history, for the properties only ---
    failedOnce,       \* some fsync has failed or panicked (on the disk, lock or not)
    durableAtFailure  \* onDisk when the first fsync failed

protocol == <<written, durable, phase, target, started, riders, nextGroup, failed,
              gatherUntil, recentlyActive>>
vars == <<protocol, lock, asleep, gatherers, pc, lsn, gen, result, onDisk, lost,
          failedOnce, durableAtFailure>>

(***************************************************************************)
(* Thread states.  Each names what the thread does next:                   *)
(*   idle          between calls                                           *)
(*   fast_path     (LSN API) about to run `already_durable`, no lock       *)
(*   arrive        about to run `arrive` (closure API: lock already held)  *)
(*   return        decided to return; holds the lock                       *)
(*   wait          decided to wait; holds the lock                         *)
(*   asleep        blocked on groups[gen % 2]                              *)
(*   woken         out of the wait set (notify or spurious): Wake next     *)
(*   timed_out     out of the wait set (deadline passed): Timeout next     *)
(*   recheck       holds the lock again, about to run `recheck`            *)
(*   lead          about to run BecomeLeader; holds the lock               *)
(*   gather        about to test the gather loop's condition               *)
(*   gathering     blocked on `gatherer`                                   *)
(*   gather_timed_out  the gather interval is over: Gather next            *)
(*   start_fsync   holds the lock, about to run `start_fsync`              *)
(*   fsync         running the fsync closure, no lock                      *)
(*   finish, fail, panic   the closure returned Ok / Err / panicked        *)
(***************************************************************************)
PCs == {"idle", "fast_path", "arrive", "return", "wait", "asleep", "woken",
        "timed_out", "recheck", "lead", "gather", "gathering", "gather_timed_out",
        "start_fsync", "fsync", "finish", "fail", "panic",
        "set_idle", "poison_late", "solo_fsync"}   \* the last three: bugs only

\* A leader: from BecomeLeader until its fsync's outcome is recorded.
LeaderPCs == {"lead", "gather", "gathering", "gather_timed_out", "start_fsync",
              "fsync", "finish", "fail", "panic", "set_idle", "poison_late"}
\* A waiter: counted in a group (riders or nextGroup) until it returns or leads.
WaiterPCs == {"wait", "asleep", "woken", "timed_out", "recheck"}
\* An fsync in flight: from the moment the leader lets go of the lock after
\* StartFsync until its outcome is recorded under the lock again.
InFlightPCs == {"fsync", "finish", "fail", "panic", "solo_fsync"}

TypeOK ==
    /\ written \in 0..MaxWrites /\ durable \in 0..MaxWrites
    /\ phase \in {"Idle", "Gathering", "Syncing"}
    /\ target \in 0..MaxWrites /\ started \in 0..MaxWrites
    /\ riders \in 0..Cardinality(Threads) /\ nextGroup \in 0..Cardinality(Threads)
    /\ failed \in BOOLEAN
    /\ gatherUntil \in Nat /\ recentlyActive \in 0..Cardinality(Threads)
    /\ lock \in Threads \cup {NoThread}
    /\ asleep \in [0..1 -> SUBSET Threads] /\ gatherers \subseteq Threads
    /\ pc \in [Threads -> PCs]
    /\ lsn \in [Threads -> 0..MaxWrites] /\ gen \in [Threads -> 0..MaxWrites + 1]
    /\ result \in [Threads -> {"none", "ok", "err", "panic"}]
    /\ onDisk \subseteq Records /\ lost \subseteq Records
    /\ failedOnce \in BOOLEAN /\ durableAtFailure \subseteq Records

Init ==
    /\ written = 0 /\ durable = 0 /\ phase = "Idle" /\ target = 0
    /\ started = 0 /\ riders = 0 /\ nextGroup = 0 /\ failed = FALSE
    /\ gatherUntil = 0 /\ recentlyActive = 0
    /\ lock = NoThread
    /\ asleep = [p \in 0..1 |-> {}] /\ gatherers = {}
    /\ pc = [t \in Threads |-> "idle"]
    /\ lsn = [t \in Threads |-> 0] /\ gen = [t \in Threads |-> 0]
    /\ result = [t \in Threads |-> "none"]
    /\ onDisk = {} /\ lost = {}
    /\ failedOnce = FALSE /\ durableAtFailure = {}

-----------------------------------------------------------------------------
(* The mutex *)

Take(t) == lock = NoThread /\ lock' = t            \* enter a critical section
Hold(t) == lock = t /\ UNCHANGED lock              \* go on inside it
Release(t) == lock = t /\ lock' = NoThread         \* leave it (a wait leaves it too)
\* A whole critical section in one step, or a step that takes no lock.
Alone == lock = NoThread /\ UNCHANGED lock

SetPc(t, s) == pc' = [pc EXCEPT ![t] = s]

(* Condition variables.  notify_one removes one member of the wait set, any  *)
(* one; these are the sets of threads it may wake.                           *)
NotifyOne(S) == IF S = {} THEN {{}} ELSE {{u} : u \in S}

-----------------------------------------------------------------------------
(* Decisions, as State::decide and State::generation_for compute them *)

\* `waited`: a waiter rechecking, rather than a call arriving.  A waiter whose
\* fsync succeeded was served even if a later one failed since; an arrival
\* after a failure is refused whatever its LSN.
Decide(t, waited) ==
    IF lsn[t] <= durable /\ waited /\ Bug # "FailureFirst" THEN "ok"
    ELSE IF failed THEN "err"
    ELSE IF lsn[t] <= durable THEN "ok"
    ELSE IF phase = "Idle" THEN "lead"
    ELSE "wait"

\* The fsync that will serve LSN l: the one in flight if it covers l, else the next.
GenerationFor(l) == IF phase = "Syncing" /\ l <= target THEN started ELSE started + 1

-----------------------------------------------------------------------------
(* Front ends: how a call begins *)

\* manager.rs FsyncManager::fsync -> protocol.rs commit_arrival: under the lock,
\* the call's write counts (written += 1) and its LSN is its arrival number.
CommitArrival(t) ==
    /\ Api = "closure" /\ pc[t] = "idle" /\ written < MaxWrites
    /\ Take(t)
    /\ written' = written + 1
    /\ lsn' = [lsn EXCEPT ![t] = written + 1]
    /\ result' = [result EXCEPT ![t] = "none"]
    /\ SetPc(t, "arrive")
    /\ UNCHANGED <<durable, phase, target, started, riders, nextGroup, failed,
                   gatherUntil, recentlyActive, asleep, gatherers, gen, onDisk, lost,
                   failedOnce, durableAtFailure>>

\* lsn.rs GroupCommit::mark_written -> protocol.rs mark_written: a critical
\* section of its own.  Each record is one LSN; the caller then commits it.
MarkWritten(t) ==
    /\ Api = "lsn" /\ pc[t] = "idle" /\ written < MaxWrites
    /\ Alone
    /\ written' = written + 1
    /\ lsn' = [lsn EXCEPT ![t] = written + 1]
    /\ result' = [result EXCEPT ![t] = "none"]
    /\ SetPc(t, "fast_path")
    /\ UNCHANGED <<durable, phase, target, started, riders, nextGroup, failed,
                   gatherUntil, recentlyActive, asleep, gatherers, gen, onDisk, lost,
                   failedOnce, durableAtFailure>>

\* lsn.rs GroupCommit::commit of an LSN this caller committed before (say, to be
\* sure it is durable): a call with no write of its own.
Commit(t) ==
    /\ Recommits /\ Api = "lsn" /\ pc[t] = "idle" /\ lsn[t] > 0
    /\ Alone
    /\ result' = [result EXCEPT ![t] = "none"]
    /\ SetPc(t, "fast_path")
    /\ UNCHANGED <<protocol, asleep, gatherers, lsn, gen, onDisk, lost, failedOnce,
                   durableAtFailure>>

\* protocol.rs already_durable, called by commit before it locks: reads the
\* atomics `poisoned` and `durable` (stored in the same critical sections as
\* `failed` and `durable`).  Two loads, not one, but `durable` never changes
\* once `poisoned` is set, so they read what one snapshot would.
FastPath(t) ==
    /\ pc[t] = "fast_path"
    /\ Alone
    /\ IF ~failed /\ lsn[t] <= durable
       THEN SetPc(t, "idle") /\ result' = [result EXCEPT ![t] = "ok"]
       ELSE SetPc(t, "arrive") /\ UNCHANGED result
    /\ UNCHANGED <<protocol, asleep, gatherers, lsn, gen, onDisk, lost,
                   failedOnce, durableAtFailure>>

-----------------------------------------------------------------------------
(* The protocol's critical sections *)

\* join_group, called by Arrive when the caller must wait: count it in the group
\* of the fsync that will serve it, and wake a gathering leader once that group
\* has the companions it gathers for (notify_one on `gatherer`).
JoinGroup(t, g) ==
    /\ gen' = [gen EXCEPT ![t] = g]
    /\ IF g = started
       THEN /\ riders' = riders + 1
            /\ UNCHANGED <<nextGroup, gatherers>>
            /\ SetPc(t, "wait")
       ELSE /\ nextGroup' = nextGroup + 1
            /\ UNCHANGED riders
            /\ IF phase = "Gathering" /\ nextGroup + 1 = gatherUntil
               THEN \E w \in NotifyOne(gatherers):
                       /\ gatherers' = gatherers \ w
                       /\ pc' = [u \in Threads |->
                                   IF u = t THEN "wait"
                                   ELSE IF u \in w THEN "gather" ELSE pc[u]]
               ELSE UNCHANGED gatherers /\ SetPc(t, "wait")

\* arrive: the first decision of a call (closure API: same critical section as
\* CommitArrival; LSN API: commit takes the lock for it).
Arrive(t) ==
    /\ pc[t] = "arrive"
    /\ lock \in {t, NoThread} /\ lock' = t
    /\ LET d == Decide(t, FALSE) IN
       CASE d \in {"ok", "err"} ->
                /\ SetPc(t, "return") /\ result' = [result EXCEPT ![t] = d]
                /\ UNCHANGED <<riders, nextGroup, gatherers, gen>>
         [] d = "lead" ->
                /\ SetPc(t, "lead")
                /\ UNCHANGED <<riders, nextGroup, gatherers, gen, result>>
         [] d = "wait" ->
                /\ JoinGroup(t, GenerationFor(lsn[t]))
                /\ UNCHANGED result
    /\ UNCHANGED <<written, durable, phase, target, started, failed, gatherUntil,
                   recentlyActive, asleep, lsn, onDisk, lost, failedOnce,
                   durableAtFailure>>

\* The caller leaves with the result decided (request's Next::Return).
Return(t) ==
    /\ pc[t] = "return"
    /\ Release(t)
    /\ SetPc(t, "idle")
    /\ UNCHANGED <<protocol, asleep, gatherers, lsn, gen, result, onDisk, lost,
                   failedOnce, durableAtFailure>>

\* wait: block on the condvar of the fsync that will serve it; releases the lock.
Wait(t) ==
    /\ pc[t] = "wait"
    /\ Release(t)
    /\ asleep' = [asleep EXCEPT ![gen[t] % 2] = @ \cup {t}]
    /\ SetPc(t, "asleep")
    /\ UNCHANGED <<protocol, gatherers, lsn, gen, result, onDisk, lost,
                   failedOnce, durableAtFailure>>

\* A wait on a group's condvar that ends with no notify.  (The checker backends
\* return at once without releasing the lock: the same as Wait, SpuriousWakeup
\* and Wake with nobody in between.)  A gathering leader may wake spuriously
\* too, but that needs no action: it takes the lock, finds too few companions
\* and waits again, a round trip that changes nothing.
SpuriousWakeup(t) ==
    /\ Spurious
    /\ Alone
    /\ pc[t] = "asleep"
    /\ asleep' = [asleep EXCEPT ![gen[t] % 2] = @ \ {t}]
    /\ SetPc(t, "woken")
    /\ UNCHANGED <<protocol, gatherers, lsn, gen, result, onDisk, lost, failedOnce,
                   durableAtFailure>>

\* A waiter's deadline passes (wait_until reports timed_out).
DeadlinePasses(t) ==
    /\ Timeouts
    /\ Alone
    /\ pc[t] = "asleep"
    /\ asleep' = [asleep EXCEPT ![gen[t] % 2] = @ \ {t}]
    /\ SetPc(t, "timed_out")
    /\ UNCHANGED <<protocol, gatherers, lsn, gen, result, onDisk, lost,
                   failedOnce, durableAtFailure>>

\* The wait returned (notified, or spuriously) and the lock is taken back:
\* request's `step!(st, "Wake", lsn)`.
Wake(t) ==
    /\ pc[t] = "woken"
    /\ Take(t)
    /\ SetPc(t, "recheck")
    /\ UNCHANGED <<protocol, asleep, gatherers, lsn, gen, result, onDisk, lost,
                   failedOnce, durableAtFailure>>

\* The wait returned timed out and the lock is taken back.  "Timed out" means the
\* deadline had passed by the time the wait returned (std_backend.rs reports it
\* even when a notify or a spurious wake-up came first), so it may follow any
\* wake-up once timeouts are on.  Timeouts change no state: the waiter only
\* looks again (Recheck).
Timeout(t) ==
    /\ \/ pc[t] = "timed_out"
       \/ Timeouts /\ pc[t] = "woken"
    /\ IF Bug = "SoloFsyncOnTimeout"
       THEN Alone /\ SetPc(t, "solo_fsync")   \* counts the timeout, lets go
       ELSE Take(t) /\ SetPc(t, "recheck")
    /\ UNCHANGED <<protocol, asleep, gatherers, lsn, gen, result, onDisk, lost,
                   failedOnce, durableAtFailure>>

\* recheck: a woken waiter decides again.  It stays counted in its group unless
\* it returns (counted as served, or reset by poison) or leads.
Recheck(t) ==
    /\ pc[t] = "recheck"
    /\ Hold(t)
    /\ LET decided == Decide(t, TRUE)
           d == IF Bug = "StealLead" /\ decided = "wait" THEN "lead" ELSE decided IN
       CASE d \in {"ok", "err"} ->
                /\ SetPc(t, "return") /\ result' = [result EXCEPT ![t] = d]
                /\ gen' = [gen EXCEPT ![t] = 0]
                /\ UNCHANGED nextGroup
         [] d = "lead" ->
                /\ SetPc(t, "lead") /\ UNCHANGED result
                /\ gen' = [gen EXCEPT ![t] = 0]
                /\ nextGroup' = IF Bug = "OrphanedGroup" THEN 0 ELSE nextGroup - 1
         [] d = "wait" ->
                /\ SetPc(t, "wait") /\ UNCHANGED <<result, nextGroup>>
                /\ gen' = [gen EXCEPT ![t] = GenerationFor(lsn[t])]
    /\ UNCHANGED <<written, durable, phase, target, started, riders, failed,
                   gatherUntil, recentlyActive, asleep, gatherers, lsn, onDisk, lost,
                   failedOnce, durableAtFailure>>

\* gathering_plan: how many companions a new leader waits for (0: none).
\* Fixed: `threshold`, unless it is alone (F8).  Adaptive: as many as were active
\* around the last fsync, less itself, for at most half that fsync's duration:
\* nothing before the first fsync (its duration is zero); after it, we assume
\* every fsync takes a few nanoseconds, so the wait is never zero.
Companions ==
    CASE Gathering = "off" -> 0
      [] Gathering = "fixed" -> IF nextGroup = 0 THEN 0 ELSE Threshold
      [] Gathering = "adaptive" ->
            IF started = 0 \/ recentlyActive = 0 THEN 0 ELSE recentlyActive - 1

\* lead: become the leader; gather while fewer companions wait than the plan says.
BecomeLeader(t) ==
    /\ pc[t] = "lead"
    /\ Hold(t)
    /\ phase' = "Gathering"
    /\ SetPc(t, IF nextGroup < Companions THEN "gather" ELSE "start_fsync")
    /\ target' = IF Bug = "TargetBeforeGathering" THEN written ELSE target
    /\ UNCHANGED <<written, durable, started, riders, nextGroup, failed,
                   gatherUntil, recentlyActive, asleep, gatherers, lsn, gen, result,
                   onDisk, lost, failedOnce, durableAtFailure>>

\* gather: one turn of its loop, under the lock (held on the first turn, right
\* after BecomeLeader, when it sets gather_until; taken back after JoinGroup's
\* notify or the interval's end on later ones).  Waits again on `gatherer`
\* while companions are too few and the interval is not over; otherwise goes
\* on to StartFsync.
Gather(t) ==
    /\ pc[t] \in {"gather", "gather_timed_out"}
    /\ lock \in {t, NoThread}
    /\ LET until == IF lock = t THEN Companions ELSE gatherUntil IN
       /\ gatherUntil' = until
       /\ IF pc[t] = "gather" /\ nextGroup < until
          THEN /\ lock' = NoThread
               /\ gatherers' = gatherers \cup {t}
               /\ SetPc(t, "gathering")
          ELSE /\ lock' = t
               /\ UNCHANGED gatherers
               /\ SetPc(t, "start_fsync")
    /\ UNCHANGED <<written, durable, phase, target, started, riders, nextGroup, failed,
                   recentlyActive, asleep, lsn, gen, result, onDisk, lost, failedOnce,
                   durableAtFailure>>

\* The gather interval ends.  Real time always ends it, so it is fair (below).
GatherDeadline(t) ==
    /\ Alone
    /\ pc[t] = "gathering"
    /\ gatherers' = gatherers \ {t}
    /\ SetPc(t, "gather_timed_out")
    /\ UNCHANGED <<protocol, asleep, lsn, gen, result, onDisk, lost, failedOnce,
                   durableAtFailure>>

\* start_fsync: fix the target (everything written so far) before the fsync
\* starts; the next group becomes this fsync's riders.  Releases the lock.
StartFsync(t) ==
    /\ pc[t] = "start_fsync"
    /\ Release(t)
    /\ started' = started + 1
    /\ target' = IF Bug = "TargetBeforeGathering" THEN target ELSE written
    /\ durable' = IF Bug = "AckAtStart" THEN written ELSE durable
    /\ phase' = "Syncing"
    /\ riders' = nextGroup
    /\ nextGroup' = 0
    /\ gen' = [gen EXCEPT ![t] = started + 1]
    /\ SetPc(t, "fsync")
    /\ UNCHANGED <<written, failed, gatherUntil, recentlyActive, asleep,
                   gatherers, lsn, result, onDisk, lost, failedOnce, durableAtFailure>>

(***************************************************************************)
(* The fsync closure, outside the lock (lead's catch_unwind(do_fsync)).    *)
(* The disk: a successful fsync makes durable what was written when it     *)
(* started, the records up to `target` (it may cover more; the protocol    *)
(* claims no more).  A failed one, or a closure that panics (perhaps after *)
(* a failed fsync), may drop every record not yet durable, as Linux does   *)
(* after EIO: we take the worst case and drop them all, for good.          *)
(***************************************************************************)
Drop ==
    /\ lost' = lost \cup ((1..written) \ onDisk)
    /\ UNCHANGED onDisk
    /\ failedOnce' = TRUE
    /\ durableAtFailure' = IF failedOnce THEN durableAtFailure ELSE onDisk

RunFsync(t) ==
    /\ pc[t] = "fsync"
    /\ Alone
    /\ \/ /\ SetPc(t, "finish")
          /\ onDisk' = onDisk \cup ((1..target) \ lost)
          /\ UNCHANGED <<lost, failedOnce, durableAtFailure>>
       \/ Failures /\ SetPc(t, "fail") /\ Drop
       \/ Panics /\ SetPc(t, "panic") /\ Drop
    /\ UNCHANGED <<protocol, asleep, gatherers, lsn, gen, result>>

\* finish_fsync after a success, one critical section: record the outcome, then
\* WakeRiders (notify_all on the group this fsync served, if it served anyone
\* but its leader) and HandOff (notify_one on the next group, if it has
\* members), both while holding the lock.  The leader returns Ok.
FinishFsync(t) ==
    /\ pc[t] = "finish"
    /\ Alone
    /\ durable' = IF Bug = "TargetAtFinish" THEN written ELSE target
    /\ riders' = 0
    /\ recentlyActive' = riders + 1 + nextGroup
    /\ IF Bug = "NotifyBeforeIdle"
       THEN UNCHANGED <<phase, target>>  \* left for SetIdle
       ELSE phase' = "Idle" /\ target' = 0
    /\ LET served == gen[t] % 2          \* wake_riders(generation)
           next == IF Bug = "HandOffWrongGroup"
                   THEN gen[t] % 2
                   ELSE (gen[t] + 1) % 2 \* hand_off(generation + 1)
           ridersWoken == IF riders > 0 THEN asleep[served] ELSE {}
           leaderNext == IF Bug = "NotifyBeforeIdle" THEN "set_idle" ELSE "idle"
       IN \E handedOff \in (IF nextGroup > 0 /\ Bug # "NoHandOff"
                            THEN NotifyOne(asleep[next]) ELSE {{}}):
            /\ asleep' = [asleep EXCEPT ![served] = @ \ ridersWoken,
                                        ![next] = @ \ handedOff]
            /\ pc' = [u \in Threads |->
                        IF u = t THEN leaderNext
                        ELSE IF u \in ridersWoken \cup handedOff THEN "woken"
                        ELSE pc[u]]
    /\ gen' = [gen EXCEPT ![t] = 0]
    /\ result' = [result EXCEPT ![t] = IF Bug = "NotifyBeforeIdle" THEN @ ELSE "ok"]
    /\ UNCHANGED <<written, started, nextGroup, failed, gatherUntil, gatherers, lsn,
                   onDisk, lost, failedOnce, durableAtFailure>>

\* Bugs WedgeOnError, WedgeOnPanic: a failed or panicking fsync leaves no trace.
Wedge(outcome) ==
    \/ Bug = "WedgeOnError" /\ outcome = "err"
    \/ Bug = "WedgeOnPanic" /\ outcome = "panic"

\* poison, from finish_fsync after a failure or a panic: mark the manager
\* failed before anyone else can start an fsync, forget both groups, and wake
\* every waiter (notify_all on both condvars) to fail.
Poison(t, outcome) ==
    /\ failed' = IF Bug = "NoPoison" THEN failed ELSE TRUE
    /\ ~Wedge(outcome)
    /\ riders' = 0 /\ nextGroup' = 0
    /\ phase' = "Idle" /\ target' = 0
    /\ asleep' = [p \in 0..1 |-> {}]
    /\ pc' = [u \in Threads |->
                IF u = t THEN "idle"
                ELSE IF u \in asleep[0] \cup asleep[1] THEN "woken"
                ELSE pc[u]]
    /\ gen' = [gen EXCEPT ![t] = 0]
    /\ result' = [result EXCEPT ![t] = outcome]
    /\ UNCHANGED <<written, durable, started, gatherUntil, recentlyActive, gatherers,
                   lsn, onDisk, lost, failedOnce, durableAtFailure>>

\* Bugs WedgeOnError, WedgeOnPanic: the leader records nothing and leaves.
Wedged(t, outcome) ==
    /\ Wedge(outcome)
    /\ SetPc(t, "idle")
    /\ gen' = [gen EXCEPT ![t] = 0]
    /\ result' = [result EXCEPT ![t] = outcome]
    /\ UNCHANGED <<protocol, asleep, gatherers, lsn, onDisk, lost, failedOnce,
                   durableAtFailure>>

\* Bug WakeBeforePoison: the failed leader sets the phase Idle and hands off,
\* then lets go of the lock; LatePoison poisons later.
WakeBeforePoison(t) ==
    /\ Bug = "WakeBeforePoison"
    /\ phase' = "Idle" /\ target' = 0
    /\ \E handedOff \in (IF nextGroup > 0 THEN NotifyOne(asleep[(gen[t] + 1) % 2])
                        ELSE {{}}):
         /\ asleep' = [asleep EXCEPT ![(gen[t] + 1) % 2] = @ \ handedOff]
         /\ pc' = [u \in Threads |->
                     IF u = t THEN "poison_late"
                     ELSE IF u \in handedOff THEN "woken" ELSE pc[u]]
    /\ UNCHANGED <<written, durable, started, riders, nextGroup, failed, gatherUntil,
                   recentlyActive, gatherers, lsn, gen, result, onDisk, lost,
                   failedOnce, durableAtFailure>>

\* finish_fsync after do_fsync returned Err: poison; the leader returns the error.
FailFsync(t) ==
    /\ pc[t] = "fail" /\ Alone
    /\ IF Bug = "WakeBeforePoison" THEN WakeBeforePoison(t)
       ELSE Poison(t, "err") \/ Wedged(t, "err")

\* finish_fsync after do_fsync panicked: poison; the panic goes on in the leader.
PanicFsync(t) == pc[t] = "panic" /\ Alone /\ (Poison(t, "panic") \/ Wedged(t, "panic"))

\* Bug WakeBeforePoison: the poison, in a critical section of its own.
LatePoison(t) == pc[t] = "poison_late" /\ Alone /\ Poison(t, "err")

\* Bug NotifyBeforeIdle: the phase set Idle, in a critical section of its own.
SetIdle(t) ==
    /\ pc[t] = "set_idle"
    /\ Alone
    /\ phase' = "Idle" /\ target' = 0
    /\ SetPc(t, "idle")
    /\ result' = [result EXCEPT ![t] = "ok"]
    /\ UNCHANGED <<written, durable, started, riders, nextGroup, failed, gatherUntil,
                   recentlyActive, asleep, gatherers, lsn, gen, onDisk, lost,
                   failedOnce, durableAtFailure>>

\* Bug SoloFsyncOnTimeout: the timed-out waiter's own fsync, outside the
\* protocol (still counted in its group); it returns the fsync's result.
SoloFsync(t) ==
    /\ pc[t] = "solo_fsync"
    /\ Alone
    /\ \/ /\ onDisk' = onDisk \cup ((1..written) \ lost)
          /\ result' = [result EXCEPT ![t] = "ok"]
          /\ UNCHANGED <<lost, failedOnce, durableAtFailure>>
       \/ Failures /\ Drop /\ result' = [result EXCEPT ![t] = "err"]
    /\ SetPc(t, "idle")
    /\ UNCHANGED <<protocol, asleep, gatherers, lsn, gen>>

-----------------------------------------------------------------------------

\* A thread's steps that it must eventually take once they stay possible:
\* everything but starting a call (callers are free not to call) and a
\* spurious wake-up (which may never happen).
Progress(t) ==
    \/ FastPath(t) \/ Arrive(t) \/ Return(t) \/ Wait(t) \/ DeadlinePasses(t)
    \/ Wake(t) \/ Timeout(t) \/ Recheck(t) \/ BecomeLeader(t) \/ Gather(t)
    \/ GatherDeadline(t) \/ StartFsync(t) \/ RunFsync(t) \/ FinishFsync(t)
    \/ FailFsync(t) \/ PanicFsync(t)
    \/ LatePoison(t) \/ SetIdle(t) \/ SoloFsync(t)          \* bugs only

Next ==
    \E t \in Threads:
        \/ CommitArrival(t) \/ MarkWritten(t) \/ Commit(t) \/ SpuriousWakeup(t)
        \/ Progress(t)

(***************************************************************************)
(* Fairness: strong fairness on each thread's progress, the steps it takes *)
(* on its own once it has started a call.  Why strong: a step that needs   *)
(* the mutex is enabled only while nobody holds it, so another thread that *)
(* takes the lock again and again (a waiter timing out every 500 ms while  *)
(* an fsync hangs) disables it again and again, and weak fairness would    *)
(* let it starve forever.  Strong fairness assumes that the mutex is not   *)
(* unfair forever to a thread that keeps asking (parking_lot's eventual    *)
(* fairness guarantees it; std's futex mutex gives it in practice, since   *)
(* every holder leaves within microseconds and then sleeps).  Lock-free    *)
(* steps wait for the lock here only because of the reduction above; in    *)
(* the code they need nothing, and strong fairness says no more for them   *)
(* than weak fairness would there.  So: the fsync returns; a gathering     *)
(* leader's interval ends; a waiter's deadline passes if it sleeps long    *)
(* enough, when timeouts are on.  Not fair: starting a call (callers may   *)
(* stop), a spurious wake-up (none need happen), and notify_one, which may *)
(* wake any waiter each time, so no waiter is owed a turn.                 *)
(***************************************************************************)
Fairness == \A t \in Threads: SF_vars(Progress(t))

Spec == Init /\ [][Next]_vars /\ Fairness
SafetySpec == Init /\ [][Next]_vars

-----------------------------------------------------------------------------
(* Properties *)

\* A caller told Ok has its record durable: made so by a completed fsync that
\* covered it, i.e. one that started after the record was written (an fsync
\* covers only records written before it started; see RunFsync).
FsyncBeforeReturn == \A t \in Threads: result[t] = "ok" => lsn[t] \in onDisk

\* Once an fsync has failed, Ok goes only to records that were durable before.
NoOkAfterFailure ==
    [][\A t \in Threads:
         (result'[t] = "ok" /\ result[t] # "ok" /\ failedOnce')
            => lsn[t] \in durableAtFailure]_vars

\* A waiter that an fsync has served (its record is durable when it looks again)
\* is told Ok, even if a later fsync has failed meanwhile.
ServedWaitersGetOk ==
    [][\A t \in Threads:
         (pc[t] = "recheck" /\ pc'[t] = "return" /\ lsn[t] <= durable)
            => result'[t] = "ok"]_vars

\* The durable LSN never decreases, and everything up to it is on the disk.
DurableMonotonic == [][durable' >= durable]_durable
DurableOnDisk == 1..durable \subseteq onDisk

\* At most one fsync in flight, from StartFsync until its outcome is recorded.
AtMostOneFsync == Cardinality({t \in Threads : pc[t] \in InFlightPCs}) <= 1

\* Nobody starts an fsync once the manager knows of a failure.
NoFsyncAfterPoison == failed => \A t \in Threads: pc[t] \notin InFlightPCs

\* A thread is never left asleep in a group while nobody leads and no hand-off
\* is pending.  A hand-off is pending when a thread out of every wait set will
\* lead as soon as it has the lock: a waiter already woken (by HandOff's
\* notify_one, or spuriously, or by its deadline) that finds the phase Idle and
\* its record not durable.  No notify is ever "due": every notify is sent inside
\* the critical section that makes it necessary (FinishFsync, JoinGroup).
Sleeping == asleep[0] \cup asleep[1]
Leading == {u \in Threads : pc[u] \in LeaderPCs}
HandOffPending ==
    \E u \in Threads:
        /\ pc[u] \in {"woken", "timed_out", "recheck"}
        /\ phase = "Idle" /\ ~failed /\ lsn[u] > durable
NoWaiterWithoutLeader == Sleeping # {} => (Leading # {} \/ HandOffPending)

\* The code's bookkeeping matches who waits where (not a requirement, a check
\* that the counters mean what protocol.rs says they mean).
Waiters == {t \in Threads : pc[t] \in WaiterPCs}
GroupCounts ==
    ~failed =>
        /\ nextGroup = Cardinality({t \in Waiters : gen[t] = started + 1})
        /\ phase = "Syncing" => riders = Cardinality({t \in Waiters : gen[t] = started})
        /\ phase # "Syncing" => riders = 0
        /\ (phase = "Idle") = (\A u \in Threads: pc[u] \notin LeaderPCs \ {"lead"})
        /\ \A t \in Sleeping: pc[t] = "asleep" /\ t \in asleep[gen[t] % 2]

\* Liveness: every call returns (Ok, Err or the panic of its own closure).
EveryRequestReturns == \A t \in Threads: pc[t] # "idle" ~> pc[t] = "idle"

Symmetry == Permutations(Threads)
=============================================================================
