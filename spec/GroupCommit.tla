----------------------------- MODULE GroupCommit -----------------------------
(***************************************************************************)
(* The group-commit protocol of src/protocol.rs and src/group.rs, step for *)
(* step: a GROUP per fsync.                                                *)
(*                                                                         *)
(* Callers share one mutex-protected `State`.  The first caller to find    *)
(* nobody leading (Idle or HandingOff) leads: it runs the flush outside    *)
(* the lock while later callers join a group, counted there by their LSN   *)
(* (a bag): `riders` (the fsync in flight, if its target covers them) or   *)
(* `next` (the fsync after it).  Each group is an object with a mailbox of *)
(* its own (outcome, lead_offered) and a condvar.  A finished leader       *)
(* records the outcome under the lock and, after letting go of it, offers  *)
(* the lead to `next` (flag + notify_one; phase HandingOff) and tells the  *)
(* riders Durable(d) (notify_all).  A woken member returns without the     *)
(* lock if d covers it (WakeServed), and otherwise decides again           *)
(* (Requeue).  A member that took the offer (TakeLead) or whose deadline   *)
(* passed (Timeout) leads only if nobody leads and its group is still      *)
(* `next` (claim_lead).                                                    *)
(*                                                                         *)
(* Granularity.  Each action is one Rust function of protocol.rs or        *)
(* group.rs (the names match: `join_group` is JoinGroup; docs/spec-map.md  *)
(* has the table).  The mutex is the variable `lock`: an action inside a   *)
(* critical section requires `lock = t`, so the steps of one critical      *)
(* section never interleave with another thread's, as in the code.  Steps  *)
(* that take no state lock (a group told, a woken member looking at its    *)
(* mailbox or returning, the flush itself, FastPath) also wait for         *)
(* `lock = NoThread`: they touch nothing a critical section reads between  *)
(* its steps, so running them before or after the whole critical section   *)
(* covers every real order (a reduction).  The exception is the planted    *)
(* bug WakeBeforeDurable, which tells the riders inside a critical         *)
(* section: there a served member may return while the leader holds the   *)
(* lock.                                                                   *)
(*                                                                         *)
(* Groups are named by numbers from a small pool: a group nobody refers to *)
(* any more (not `riders`, not `next`, no member waits on it, no leader    *)
(* is about to tell it) is free, and a fresh group is the least free one   *)
(* with an empty mailbox (Arc::new(Group::new()), or the reused unshared   *)
(* riders' group: the same thing).                                         *)
(***************************************************************************)
EXTENDS Integers, Sequences, FiniteSets, TLC

CONSTANTS
    Threads,    \* the callers (model values; symmetric)
    NoThread,   \* what `lock` holds when nobody is in a critical section
    Api,        \* "closure": FsyncManager::fsync; "lsn": mark_written + commit;
                \* "flush": GroupFlush::flush (the leader writes, reports `covered`)
    MaxWrites,  \* records written (LSNs requested) in all: the state space is finite
    Gathering,  \* Config::gathering(): "off", "fixed" or "adaptive"
    Threshold,  \* Gathering::Fixed { threshold }: companions a fixed leader waits for
    Timeouts,   \* TRUE: a waiter's deadline may pass (Config::waiter_timeout)
    Spurious,   \* TRUE: a wait may end without a notify
    Failures,   \* TRUE: an fsync may return an error
    Panics,     \* TRUE: an fsync closure may panic
    Recommits,  \* TRUE (LSN API): a caller may commit an LSN it committed before
    MaxShortFlushes, \* (flush API) flushes that may report less than their target
    Bug         \* "none", or a bug planted on purpose (below)

ASSUME Api \in {"closure", "lsn", "flush"}
ASSUME MaxWrites \in Nat /\ Threshold \in Nat \ {0} /\ MaxShortFlushes \in Nat
ASSUME Gathering \in {"off", "fixed", "adaptive"}
ASSUME {Timeouts, Spurious, Failures, Panics, Recommits} \subseteq BOOLEAN
ASSUME Bug \in {"none", "AckAtStart", "TargetAtFinish", "NotifyBeforeIdle",
                "WedgeOnError", "WakeBeforePoison", "NoHandOff", "OrphanedGroup",
                "HandOffWrongGroup", "StealLead", "NoPoison", "WedgeOnPanic",
                "SoloFsyncOnTimeout", "TargetBeforeGathering", "FailureFirst",
                "LostUnpark", "WakeBeforeDurable", "NoReentryCheck",
                "AckAboveCovered", "DurableToTarget", "RedundantFsync"}

(* Planted bugs (/work/notes/planted-plan-v2.md, verify/bugs/): each has a   *)
(* config GroupCommitBug<Name>.cfg that must fail.                          *)
(*   AckAtStart      StartFsync raises durable to its target (c1)            *)
(*   TargetAtFinish  FinishFsync takes `written` at the finish as what the   *)
(*                   fsync covered (c2)                                      *)
(*   NotifyBeforeIdle  the finished leader offers the lead to `next` before  *)
(*                   finish_fsync takes the lock (phase still Syncing), and  *)
(*                   not again after: a member takes the offer, cannot claim *)
(*                   the lead, sleeps again; HandingOff then has no offer (c3)*)
(*   WedgeOnError    FailFsync records nothing: phase stays Syncing (c5)     *)
(*   WakeBeforePoison  FailFsync offers the lead to `next` (HandingOff)      *)
(*                   before it records the failure (LatePoison) (c6)         *)
(*   NoHandOff       FinishFsync sets HandingOff but never offers (f1)       *)
(*   OrphanedGroup   FinishFsync replaces `next` by a fresh group, dropping  *)
(*                   its members' LSNs: they are never told (f2)             *)
(*   HandOffWrongGroup  the offer goes to the riders' group (f2b)            *)
(*   StealLead       claim_lead checks neither the phase nor that the group *)
(*                   is still `next` (f3)                                    *)
(*   NoPoison        a failed fsync does not record the failure (f4)        *)
(*   WedgeOnPanic    PanicFsync records nothing: phase stays Syncing (f6)    *)
(*   SoloFsyncOnTimeout  a timed-out waiter runs an fsync of its own,        *)
(*                   outside the protocol, and returns its result (f7)       *)
(*   TargetBeforeGathering  BecomeLeader fixes the target before the leader *)
(*                   gathers; StartFsync keeps it (g1)                       *)
(*   FailureFirst    a member told Durable covering it decides again under  *)
(*                   the lock, failure first (Requeue's order) (l1)          *)
(*   LostUnpark      offer_lead sets the flag but does not notify (k1)       *)
(*   WakeBeforeDurable  FinishFsync tells the riders Durable at the top of   *)
(*                   the success branch, before durable is raised (k2)       *)
(*   NoReentryCheck  refuse_reentry lets a re-entrant call through: it waits *)
(*                   in `next` for the fsync it runs inside (r1)             *)
(*   AckAboveCovered (flush) riders are told (and counted) served up to the  *)
(*                   target, not the covered LSN (x1)                        *)
(*   DurableToTarget (flush) durable is raised to the target, not to the    *)
(*                   covered LSN (x2)                                        *)
(*   RedundantFsync  (flush) a next group the flush covered whole is not    *)
(*                   served: it is offered the lead (x3)                     *)

Records == 1..MaxWrites   \* a record is named by its LSN
Groups == 1..(Cardinality(Threads) + 4)
NoGroup == 0
\* A mailbox's outcome: none yet, Failed, or Durable(d) as d itself (d >= 0).
NoOutcome == -2
FailedOutcome == -1

\* Bags of LSNs (a group's members, counted by LSN: rider_lsns, next_lsns).
EmptyBag == [r \in Records |-> 0]
Put(b, l) == [b EXCEPT ![l] = @ + 1]
Drop1(b, l) == [b EXCEPT ![l] = @ - 1]
RECURSIVE SumTo(_, _)
SumTo(b, n) == IF n = 0 THEN 0 ELSE b[n] + SumTo(b, n - 1)
Size(b) == SumTo(b, MaxWrites)
AllAtMost(b, d) == \A r \in Records: b[r] > 0 => r <= d
CountAtMost(b, d) == SumTo(b, IF d < MaxWrites THEN d ELSE MaxWrites)
Max(a, b) == IF a > b THEN a ELSE b

VARIABLES
    \* --- protocol.rs `State`, guarded by the mutex ---
    written,    \* highest LSN written (closure API: callers arrived; flush: requested)
    durable,    \* highest LSN covered by a completed, successful fsync
    phase,      \* "Idle" | "HandingOff" | "Gathering" | "Syncing"
    target,     \* Phase::Syncing { target }, else 0
    started,    \* fsyncs started so far
    ridersG,    \* `riders`: the group of the fsync in flight (or of the last one)
    riderLsns,  \* `rider_lsns`, a bag
    nextG,      \* `next`: the group of the fsync after it
    nextLsns,   \* `next_lsns`, a bag
    failed,     \* State::failure.is_some()
    gatherUntil,    \* companions a gathering leader waits for
    recentlyActive, \* callers around the last successful fsync
    \* --- the groups' mailboxes (group.rs Mailbox) ---
    outcome,    \* outcome[g]: NoOutcome, FailedOutcome or the durable LSN told
    offered,    \* offered[g]: lead_offered
    \* --- the mutex and the gatherer's condition variable ---
    lock,       \* the thread inside a critical section, or NoThread
    gatherers,  \* threads blocked on `gatherer`
    \* --- each caller's locals ---
    pc,         \* the step the thread takes next
    lsn,        \* the LSN of its current (or last) request
    result,     \* how its last call ended: "none" (running), "ok", "err", "panic"
    grp,        \* the group it sleeps on (await_outcome's `group`), or NoGroup
    covered,    \* what its flush reported (a leader's, between RunFsync and FinishFsync)
    offerTo,    \* a finished leader's group to offer the lead to, or NoGroup
    tellTo,     \* a finished leader's groups still to tell, in order
    tellWhat,   \* the outcome it tells them
    leadAgain,  \* the finished leader leads again after telling (LeadAgain)
    \* --- the disk, which the protocol never sees ---
    onDisk,     \* records a completed fsync made durable
    lost,       \* records a failed fsync dropped (Linux after EIO)
    \* --- history, for the properties and bounds only ---
    failedOnce,       \* some fsync has failed or panicked
    durableAtFailure, \* onDisk when the first fsync failed
    toldTwice,        \* some group was told an outcome twice
    shorts            \* flushes that reported less than their target

protocol == <<written, durable, phase, target, started, ridersG, riderLsns, nextG,
              nextLsns, failed, gatherUntil, recentlyActive>>
mailboxes == <<outcome, offered>>
locals == <<pc, lsn, result, grp, covered, offerTo, tellTo, tellWhat, leadAgain>>
disk == <<onDisk, lost, failedOnce, durableAtFailure>>
vars == <<protocol, mailboxes, lock, gatherers, locals, disk, toldTwice, shorts>>

(***************************************************************************)
(* Thread states.  Each names what the thread does next:                   *)
(*   idle          between calls                                           *)
(*   fast_path     (LSN API) about to run `already_durable`, no lock       *)
(*   request_flush (flush API) about to lock and raise `written`           *)
(*   arrive        about to run `arrive` (lock held, or taken now)         *)
(*   return        decided to return; holds the lock                       *)
(*   wait          joined a group; holds the lock, about to sleep          *)
(*   check         awake (or about to sleep): looks at its mailbox next    *)
(*   asleep        in Group::wait, blocked on the group's condvar          *)
(*   outcome       its group was told an outcome: WakeServed, WakeFailed   *)
(*                 or Requeue next                                         *)
(*   take_lead     it took the offered lead: TakeLead next                 *)
(*   timed_out     its deadline passed, no news: Timeout next              *)
(*   lead          about to run BecomeLeader; holds the lock               *)
(*   lead_again    a finished leader whose flush fell short: lock, lead    *)
(*   gather, gathering, gather_timed_out   the gather loop                 *)
(*   start_fsync   holds the lock, about to run `start_fsync`              *)
(*   fsync         running the flush, no lock                              *)
(*   reentry       the flush calls this manager again (RefuseReentry)      *)
(*   finish, fail, panic   the flush returned Ok / Err / panicked          *)
(*   hand_off      about to offer the lead (offer_lead)                    *)
(*   wake_riders   about to tell the head of `tellTo` Durable              *)
(*   wake_failed   about to tell the head of `tellTo` Failed               *)
(***************************************************************************)
BugPCs == {"finish_offered", "finish_late", "hand_off_failed", "poison_late",
           "solo_fsync", "reentered"}
PCs == {"idle", "fast_path", "request_flush", "arrive", "return", "wait", "check",
        "asleep", "outcome", "take_lead", "timed_out", "lead", "lead_again", "gather",
        "gathering", "gather_timed_out", "start_fsync", "fsync", "reentry", "finish",
        "fail", "panic", "hand_off", "wake_riders", "wake_failed"} \cup BugPCs

\* A leader: from Arrive's (or a claim's) decision until its outcome is recorded.
LeaderPCs == {"lead", "lead_again", "gather", "gathering", "gather_timed_out",
              "start_fsync", "fsync", "reentry", "reentered", "finish",
              "finish_offered", "finish_late", "fail", "panic", "hand_off_failed",
              "poison_late"}
\* A member of a group: from JoinGroup until it returns or leads.
WaiterPCs == {"wait", "check", "asleep", "outcome", "take_lead", "timed_out"}
\* A finished leader telling groups after the lock.
TellerPCs == {"hand_off", "hand_off_failed", "wake_riders", "wake_failed"}
\* An fsync in flight: from StartFsync until its outcome is recorded.
InFlightPCs == {"fsync", "reentry", "reentered", "finish", "finish_offered",
                "finish_late", "fail", "panic", "solo_fsync"}

Range(s) == {s[i] : i \in DOMAIN s}
SeqsOf(S, n) == UNION {[1..k -> S] : k \in 0..n}

TypeOK ==
    /\ written \in 0..MaxWrites /\ durable \in 0..MaxWrites
    /\ phase \in {"Idle", "HandingOff", "Gathering", "Syncing"}
    /\ target \in 0..MaxWrites /\ started \in Nat
    /\ ridersG \in Groups /\ nextG \in Groups /\ ridersG # nextG
    /\ riderLsns \in [Records -> Nat] /\ nextLsns \in [Records -> Nat]
    /\ failed \in BOOLEAN
    /\ gatherUntil \in Nat /\ recentlyActive \in Nat
    /\ outcome \in [Groups -> {NoOutcome, FailedOutcome} \cup 0..MaxWrites]
    /\ offered \in [Groups -> BOOLEAN]
    /\ lock \in Threads \cup {NoThread} /\ gatherers \subseteq Threads
    /\ pc \in [Threads -> PCs]
    /\ lsn \in [Threads -> 0..MaxWrites]
    /\ result \in [Threads -> {"none", "ok", "err", "panic"}]
    /\ grp \in [Threads -> Groups \cup {NoGroup}]
    /\ covered \in [Threads -> 0..MaxWrites]
    /\ offerTo \in [Threads -> Groups \cup {NoGroup}]
    /\ tellTo \in [Threads -> SeqsOf(Groups, 2)]
    /\ tellWhat \in [Threads -> {FailedOutcome} \cup 0..MaxWrites]
    /\ leadAgain \in [Threads -> BOOLEAN]
    /\ onDisk \subseteq Records /\ lost \subseteq Records
    /\ failedOnce \in BOOLEAN /\ durableAtFailure \subseteq Records
    /\ toldTwice \in BOOLEAN /\ shorts \in 0..MaxShortFlushes

Init ==
    /\ written = 0 /\ durable = 0 /\ phase = "Idle" /\ target = 0 /\ started = 0
    /\ ridersG = 1 /\ riderLsns = EmptyBag /\ nextG = 2 /\ nextLsns = EmptyBag
    /\ failed = FALSE /\ gatherUntil = 0 /\ recentlyActive = 0
    /\ outcome = [g \in Groups |-> NoOutcome]
    /\ offered = [g \in Groups |-> FALSE]
    /\ lock = NoThread /\ gatherers = {}
    /\ pc = [t \in Threads |-> "idle"]
    /\ lsn = [t \in Threads |-> 0]
    /\ result = [t \in Threads |-> "none"]
    /\ grp = [t \in Threads |-> NoGroup]
    /\ covered = [t \in Threads |-> 0]
    /\ offerTo = [t \in Threads |-> NoGroup]
    /\ tellTo = [t \in Threads |-> <<>>]
    /\ tellWhat = [t \in Threads |-> FailedOutcome]
    /\ leadAgain = [t \in Threads |-> FALSE]
    /\ onDisk = {} /\ lost = {}
    /\ failedOnce = FALSE /\ durableAtFailure = {}
    /\ toldTwice = FALSE /\ shorts = 0

-----------------------------------------------------------------------------
(* The mutex *)

Take(t) == lock = NoThread /\ lock' = t            \* enter a critical section
Hold(t) == lock = t /\ UNCHANGED lock              \* go on inside it
Release(t) == lock = t /\ lock' = NoThread         \* leave it
\* A step that takes no state lock.
Alone == lock = NoThread /\ UNCHANGED lock
\* A lock-free step of a woken member (see the reduction above).
LockFree == (lock = NoThread \/ Bug = "WakeBeforeDurable") /\ UNCHANGED lock

SetPc(t, s) == pc' = [pc EXCEPT ![t] = s]

-----------------------------------------------------------------------------
(* Groups (src/group.rs) *)

\* The groups somebody refers to; the others are free.
Referenced ==
    {ridersG, nextG}
    \cup {grp[t] : t \in Threads} \cup {offerTo[t] : t \in Threads}
    \cup UNION {Range(tellTo[t]) : t \in Threads}
\* Arc::new(Group::new()): the least free group (its mailbox is emptied).
Fresh == CHOOSE g \in Groups : g \notin Referenced /\ \A h \in Groups \ Referenced: g <= h
Emptied(g) ==
    /\ outcome' = [outcome EXCEPT ![g] = NoOutcome]
    /\ offered' = [offered EXCEPT ![g] = FALSE]

\* Members of g blocked on its condvar.
Sleepers(g) == {u \in Threads : pc[u] = "asleep" /\ grp[u] = g}

\* Group::finish(o), by a finished leader t: record the outcome and wake every
\* member (notify_all); a woken member finds the outcome (told once, it stays).
Finish(t, g, o, next) ==
    /\ outcome' = [outcome EXCEPT ![g] = o]
    /\ toldTwice' = (toldTwice \/ outcome[g] # NoOutcome)
    /\ pc' = [u \in Threads |-> IF u = t THEN next
                                ELSE IF u \in Sleepers(g) THEN "outcome" ELSE pc[u]]

\* Group::offer_lead, by t: raise the flag and wake one sleeper (notify_one),
\* who looks at the mailbox later (another member may take the flag first).
\* Bug LostUnpark: no notify.
Offer(t, g, next) ==
    /\ offered' = [offered EXCEPT ![g] = TRUE]
    /\ \E w \in IF Sleepers(g) = {} \/ Bug = "LostUnpark" THEN {NoThread}
                ELSE Sleepers(g):
          pc' = [u \in Threads |-> IF u = t THEN next
                                   ELSE IF u = w THEN "check" ELSE pc[u]]

\* Group::news: the outcome first, then an offer (taken: the flag goes down).
\* `none` is where the member goes without news.
LookAt(t, none) ==
    LET g == grp[t] IN
    IF outcome[g] # NoOutcome
    THEN SetPc(t, "outcome") /\ UNCHANGED offered
    ELSE IF offered[g]
    THEN SetPc(t, "take_lead") /\ offered' = [offered EXCEPT ![g] = FALSE]
    ELSE SetPc(t, none) /\ UNCHANGED offered

\* Group::wait, after a wake-up or before the first sleep: the mailbox's news,
\* or sleep (again: a spurious wake-up loops inside Group::wait).
Look(t) ==
    /\ pc[t] = "check"
    /\ Alone
    /\ LookAt(t, "asleep")
    /\ UNCHANGED <<protocol, outcome, gatherers, lsn, result, grp, covered, offerTo,
                   tellTo, tellWhat, leadAgain, disk, toldTwice, shorts>>

\* A sleeper wakes with no notify.  Only worth a step when news is there
\* (with none, Group::wait sleeps again: no step).
SpuriousWakeup(t) ==
    /\ Spurious
    /\ Alone
    /\ pc[t] = "asleep" /\ (outcome[grp[t]] # NoOutcome \/ offered[grp[t]])
    /\ SetPc(t, "check")
    /\ UNCHANGED <<protocol, mailboxes, gatherers, lsn, result, grp, covered, offerTo,
                   tellTo, tellWhat, leadAgain, disk, toldTwice, shorts>>

\* A sleeper's deadline passes: wait_until returns with the mailbox locked, and
\* Group::wait answers its news, or TimedOut.
DeadlinePasses(t) ==
    /\ Timeouts
    /\ Alone
    /\ pc[t] = "asleep"
    /\ LookAt(t, "timed_out")
    /\ UNCHANGED <<protocol, outcome, gatherers, lsn, result, grp, covered, offerTo,
                   tellTo, tellWhat, leadAgain, disk, toldTwice, shorts>>

-----------------------------------------------------------------------------
(* Decisions *)

\* State::decide: a call after a failure is refused whatever its LSN; nobody
\* leads in Idle and HandingOff, so a caller that finds either leads.
Decide(t) ==
    IF failed THEN "err"
    ELSE IF lsn[t] <= durable THEN "ok"
    ELSE IF phase \in {"Idle", "HandingOff"} THEN "lead"
    ELSE "wait"

\* claim_lead (TakeLead, Timeout): nobody leads, nothing failed, and the
\* member's group is still `next`.  Bug StealLead: only "nothing failed", and
\* the group riders or next.
ClaimLead(t) ==
    IF Bug = "StealLead"
    THEN ~failed /\ grp[t] \in {ridersG, nextG}
    ELSE phase \in {"Idle", "HandingOff"} /\ ~failed /\ grp[t] = nextG

\* The claim leaves the group: its LSN off the group's bag; the lock is kept.
Claim(t) ==
    /\ Take(t)
    /\ IF grp[t] = nextG
       THEN nextLsns' = Drop1(nextLsns, lsn[t]) /\ UNCHANGED riderLsns
       ELSE riderLsns' = Drop1(riderLsns, lsn[t]) /\ UNCHANGED nextLsns
    /\ grp' = [grp EXCEPT ![t] = NoGroup]
    /\ SetPc(t, "lead")

-----------------------------------------------------------------------------
(* Front ends: how a call begins (a thread has one call at a time). *)

\* manager.rs FsyncManager::fsync -> protocol.rs commit_arrival: under the lock,
\* refuse_reentry passes, the call's write counts (written += 1) and its LSN is
\* its arrival number.
CommitArrival(t) ==
    /\ Api = "closure" /\ pc[t] = "idle" /\ written < MaxWrites
    /\ Take(t)
    /\ written' = written + 1
    /\ lsn' = [lsn EXCEPT ![t] = written + 1]
    /\ result' = [result EXCEPT ![t] = "none"]
    /\ SetPc(t, "arrive")
    /\ UNCHANGED <<durable, phase, target, started, ridersG, riderLsns, nextG,
                   nextLsns, failed, gatherUntil, recentlyActive, mailboxes, gatherers,
                   grp, covered, offerTo, tellTo, tellWhat, leadAgain, disk, toldTwice,
                   shorts>>

\* lsn.rs GroupCommit::mark_written -> protocol.rs mark_written, a critical
\* section of its own; the caller then commits the record.
MarkWritten(t) ==
    /\ Api = "lsn" /\ pc[t] = "idle" /\ written < MaxWrites
    /\ Alone
    /\ written' = written + 1
    /\ lsn' = [lsn EXCEPT ![t] = written + 1]
    /\ result' = [result EXCEPT ![t] = "none"]
    /\ SetPc(t, "fast_path")
    /\ UNCHANGED <<durable, phase, target, started, ridersG, riderLsns, nextG,
                   nextLsns, failed, gatherUntil, recentlyActive, mailboxes, gatherers,
                   grp, covered, offerTo, tellTo, tellWhat, leadAgain, disk, toldTwice,
                   shorts>>

\* GroupCommit::commit of an LSN this caller committed before.
Commit(t) ==
    /\ Recommits /\ Api = "lsn" /\ pc[t] = "idle" /\ lsn[t] > 0
    /\ Alone
    /\ result' = [result EXCEPT ![t] = "none"]
    /\ SetPc(t, "fast_path")
    /\ UNCHANGED <<protocol, mailboxes, gatherers, lsn, grp, covered, offerTo, tellTo,
                   tellWhat, leadAgain, disk, toldTwice, shorts>>

\* protocol.rs already_durable (commit and flush call it before they lock):
\* the atomics `poisoned` and `durable`, stored with `failed` and `durable`.
FastPath(t) ==
    /\ pc[t] = "fast_path"
    /\ Alone
    /\ IF ~failed /\ lsn[t] <= durable
       THEN SetPc(t, "idle") /\ result' = [result EXCEPT ![t] = "ok"]
       ELSE SetPc(t, IF Api = "flush" THEN "request_flush" ELSE "arrive")
            /\ UNCHANGED result
    /\ UNCHANGED <<protocol, mailboxes, gatherers, lsn, grp, covered, offerTo, tellTo,
                   tellWhat, leadAgain, disk, toldTwice, shorts>>

\* flush.rs GroupFlush::flush(lsn): any LSN the log could hold; already_durable
\* next.
Flush(t) ==
    /\ Api = "flush" /\ pc[t] = "idle"
    /\ Alone
    /\ \E l \in Records: lsn' = [lsn EXCEPT ![t] = l]
    /\ result' = [result EXCEPT ![t] = "none"]
    /\ SetPc(t, "fast_path")
    /\ UNCHANGED <<protocol, mailboxes, gatherers, grp, covered, offerTo, tellTo,
                   tellWhat, leadAgain, disk, toldTwice, shorts>>

\* protocol.rs flush, under the lock: refuse_reentry and the LSN checks pass,
\* and the request raises `written` (the highest LSN asked for); Arrive next, in
\* the same critical section.
RequestFlush(t) ==
    /\ pc[t] = "request_flush"
    /\ Take(t)
    /\ written' = Max(written, lsn[t])
    /\ SetPc(t, "arrive")
    /\ UNCHANGED <<durable, phase, target, started, ridersG, riderLsns, nextG,
                   nextLsns, failed, gatherUntil, recentlyActive, mailboxes, gatherers,
                   lsn, result, grp, covered, offerTo, tellTo, tellWhat, leadAgain, disk,
                   toldTwice, shorts>>

-----------------------------------------------------------------------------
(* The protocol's critical sections *)

\* join_group: count the caller in the group of the fsync that will serve it
\* (riders if the fsync in flight covers its LSN, else next), and wake a
\* gathering leader once next has the companions it gathers for.  The caller
\* goes to `then` (still holding the lock for Arrive's Wait; Requeue lets go).
JoinGroup(t, then) ==
    IF phase = "Syncing" /\ lsn[t] <= target
    THEN /\ riderLsns' = Put(riderLsns, lsn[t])
         /\ grp' = [grp EXCEPT ![t] = ridersG]
         /\ UNCHANGED <<nextLsns, gatherers>>
         /\ SetPc(t, then)
    ELSE /\ nextLsns' = Put(nextLsns, lsn[t])
         /\ grp' = [grp EXCEPT ![t] = nextG]
         /\ UNCHANGED riderLsns
         /\ IF phase = "Gathering" /\ Size(nextLsns) + 1 = gatherUntil
            THEN \E w \in (IF gatherers = {} THEN {{}} ELSE {{g} : g \in gatherers}):
                    /\ gatherers' = gatherers \ w
                    /\ pc' = [u \in Threads |->
                                IF u = t THEN then
                                ELSE IF u \in w THEN "gather" ELSE pc[u]]
            ELSE UNCHANGED gatherers /\ SetPc(t, then)

\* arrive: the first decision of a call, in the critical section the front end
\* opened (closure, flush) or one of its own (LSN API: commit locks for it).
Arrive(t) ==
    /\ pc[t] = "arrive"
    /\ lock \in {t, NoThread} /\ lock' = t
    /\ LET d == Decide(t) IN
       CASE d \in {"ok", "err"} ->
                /\ SetPc(t, "return") /\ result' = [result EXCEPT ![t] = d]
                /\ UNCHANGED <<riderLsns, nextLsns, gatherers, grp>>
         [] d = "lead" ->
                /\ SetPc(t, "lead")
                /\ UNCHANGED <<riderLsns, nextLsns, gatherers, result, grp>>
         [] d = "wait" ->
                /\ JoinGroup(t, "wait")
                /\ UNCHANGED result
    /\ UNCHANGED <<written, durable, phase, target, started, ridersG, nextG, failed,
                   gatherUntil, recentlyActive, mailboxes, lsn, covered, offerTo, tellTo,
                   tellWhat, leadAgain, disk, toldTwice, shorts>>

\* request's Next::Return: the caller leaves with the result decided.
Return(t) ==
    /\ pc[t] = "return"
    /\ Release(t)
    /\ SetPc(t, "idle")
    /\ UNCHANGED <<protocol, mailboxes, gatherers, lsn, result, grp, covered, offerTo,
                   tellTo, tellWhat, leadAgain, disk, toldTwice, shorts>>

\* request's Next::Wait: let go of the lock; await_outcome sleeps on the group
\* (Group::wait looks at the mailbox first).
Wait(t) ==
    /\ pc[t] = "wait"
    /\ Release(t)
    /\ SetPc(t, "check")
    /\ UNCHANGED <<protocol, mailboxes, gatherers, lsn, result, grp, covered, offerTo,
                   tellTo, tellWhat, leadAgain, disk, toldTwice, shorts>>

\* await_outcome, Outcome::Durable(d) with lsn <= d: return Ok(d), no lock.
WakeServed(t) ==
    /\ pc[t] = "outcome" /\ outcome[grp[t]] >= 0 /\ lsn[t] <= outcome[grp[t]]
    /\ Bug # "FailureFirst"
    /\ LockFree
    /\ SetPc(t, "idle")
    /\ result' = [result EXCEPT ![t] = "ok"]
    /\ grp' = [grp EXCEPT ![t] = NoGroup]
    /\ UNCHANGED <<protocol, mailboxes, gatherers, lsn, covered, offerTo, tellTo,
                   tellWhat, leadAgain, disk, toldTwice, shorts>>

\* await_outcome, Outcome::Failed: return the failure, no lock.
WakeFailed(t) ==
    /\ pc[t] = "outcome" /\ outcome[grp[t]] = FailedOutcome
    /\ LockFree
    /\ SetPc(t, "idle")
    /\ result' = [result EXCEPT ![t] = "err"]
    /\ grp' = [grp EXCEPT ![t] = NoGroup]
    /\ UNCHANGED <<protocol, mailboxes, gatherers, lsn, covered, offerTo, tellTo,
                   tellWhat, leadAgain, disk, toldTwice, shorts>>

\* requeue, one critical section: a member its group's flush did not cover
\* (Durable(d), lsn > d) decides again: Ok, Err, lead (the lock kept), or
\* wait in a group again (the lock let go, its mailbox looked at).  Bug
\* FailureFirst: a covered member comes here too, and decide puts the failure
\* first.
Requeue(t) ==
    /\ pc[t] = "outcome" /\ outcome[grp[t]] >= 0
    /\ lsn[t] > outcome[grp[t]] \/ Bug = "FailureFirst"
    /\ LET d == Decide(t) IN
       CASE d \in {"ok", "err"} ->
                /\ Alone /\ SetPc(t, "idle")
                /\ result' = [result EXCEPT ![t] = d]
                /\ grp' = [grp EXCEPT ![t] = NoGroup]
                /\ UNCHANGED <<riderLsns, nextLsns, gatherers>>
         [] d = "lead" ->
                /\ Take(t) /\ SetPc(t, "lead")
                /\ grp' = [grp EXCEPT ![t] = NoGroup]
                /\ UNCHANGED <<riderLsns, nextLsns, gatherers, result>>
         [] d = "wait" ->
                /\ Alone /\ JoinGroup(t, "check")
                /\ UNCHANGED result
    /\ UNCHANGED <<written, durable, phase, target, started, ridersG, nextG, failed,
                   gatherUntil, recentlyActive, mailboxes, lsn, covered, offerTo, tellTo,
                   tellWhat, leadAgain, disk, toldTwice, shorts>>

\* take_lead, one critical section: a member that took the offer leads if it
\* can claim the lead (the lock kept, BecomeLeader next); otherwise somebody
\* already running leads, and it sleeps on its group again.
TakeLead(t) ==
    /\ pc[t] = "take_lead"
    /\ IF ClaimLead(t)
       THEN Claim(t)
       ELSE Alone /\ SetPc(t, "check") /\ UNCHANGED <<riderLsns, nextLsns, grp>>
    /\ UNCHANGED <<written, durable, phase, target, started, ridersG, nextG, failed,
                   gatherUntil, recentlyActive, mailboxes, gatherers, lsn, result,
                   covered, offerTo, tellTo, tellWhat, leadAgain, disk, toldTwice, shorts>>

\* timeout: the safety net, one critical section (stats.timeouts += 1, not
\* modelled): a member that can claim the lead leads; otherwise it sleeps
\* again with a fresh deadline.
Timeout(t) ==
    /\ pc[t] = "timed_out"
    /\ CASE Bug = "SoloFsyncOnTimeout" ->
              \* its own fsync, outside the protocol (still counted in its group)
              /\ Alone /\ SetPc(t, "solo_fsync")
              /\ UNCHANGED <<riderLsns, nextLsns, grp>>
         [] ClaimLead(t) -> Claim(t)
         [] OTHER ->
              /\ Alone /\ SetPc(t, "check")
              /\ UNCHANGED <<riderLsns, nextLsns, grp>>
    /\ UNCHANGED <<written, durable, phase, target, started, ridersG, nextG, failed,
                   gatherUntil, recentlyActive, mailboxes, gatherers, lsn, result,
                   covered, offerTo, tellTo, tellWhat, leadAgain, disk, toldTwice, shorts>>

\* gathering_plan: companions a new leader waits for (0: none).  Fixed:
\* `threshold`, unless nobody waits (F8).  Adaptive: those active around the
\* last fsync, less itself (nothing before the first fsync); adaptive gathering
\* may also be off for the epoch (a free choice in BecomeLeader).
Companions ==
    CASE Gathering = "off" -> 0
      [] Gathering = "fixed" -> IF Size(nextLsns) = 0 THEN 0 ELSE Threshold
      [] Gathering = "adaptive" ->
            IF started = 0 \/ recentlyActive = 0 THEN 0 ELSE recentlyActive - 1

\* lead: become the leader (phase Gathering), right after the decision (lock
\* held) or, leading again after a short flush, in a new critical section.
BecomeLeader(t) ==
    /\ \/ pc[t] = "lead" /\ Hold(t)
       \/ pc[t] = "lead_again" /\ Take(t)
    /\ phase' = "Gathering"
    /\ \E pause \in (IF Gathering = "adaptive" THEN BOOLEAN ELSE {FALSE}):
          SetPc(t, IF ~pause /\ Size(nextLsns) < Companions THEN "gather"
                   ELSE "start_fsync")
    /\ target' = IF Bug = "TargetBeforeGathering" THEN written ELSE target
    /\ leadAgain' = [leadAgain EXCEPT ![t] = FALSE]
    /\ UNCHANGED <<written, durable, started, ridersG, riderLsns, nextG, nextLsns,
                   failed, gatherUntil, recentlyActive, mailboxes, gatherers, lsn, result,
                   grp, covered, offerTo, tellTo, tellWhat, disk, toldTwice, shorts>>

\* gather: one turn of its loop, under the lock.  Waits on `gatherer` while
\* companions are too few and the interval is not over; else StartFsync.
Gather(t) ==
    /\ pc[t] \in {"gather", "gather_timed_out"}
    /\ lock \in {t, NoThread}
    /\ LET until == IF lock = t THEN Companions ELSE gatherUntil IN
       /\ gatherUntil' = until
       /\ IF pc[t] = "gather" /\ Size(nextLsns) < until
          THEN /\ lock' = NoThread
               /\ gatherers' = gatherers \cup {t}
               /\ SetPc(t, "gathering")
          ELSE /\ lock' = t
               /\ UNCHANGED gatherers
               /\ SetPc(t, "start_fsync")
    /\ UNCHANGED <<written, durable, phase, target, started, ridersG, riderLsns, nextG,
                   nextLsns, failed, recentlyActive, mailboxes, lsn, result, grp, covered,
                   offerTo, tellTo, tellWhat, leadAgain, disk, toldTwice, shorts>>

\* The gather interval ends (real time always ends it: fair).
GatherDeadline(t) ==
    /\ Alone
    /\ pc[t] = "gathering"
    /\ gatherers' = gatherers \ {t}
    /\ SetPc(t, "gather_timed_out")
    /\ UNCHANGED <<protocol, mailboxes, lsn, result, grp, covered, offerTo, tellTo,
                   tellWhat, leadAgain, disk, toldTwice, shorts>>

\* start_fsync: fix the target (everything written so far); `next` becomes this
\* fsync's riders (the group object moves) and a fresh group is `next`.
StartFsync(t) ==
    /\ pc[t] = "start_fsync"
    /\ Release(t)
    /\ started' = started + 1
    /\ target' = IF Bug = "TargetBeforeGathering" THEN target ELSE written
    /\ durable' = IF Bug = "AckAtStart" THEN written ELSE durable
    /\ phase' = "Syncing"
    /\ ridersG' = nextG /\ riderLsns' = nextLsns
    /\ nextG' = Fresh /\ nextLsns' = EmptyBag /\ Emptied(Fresh)
    /\ SetPc(t, "fsync")
    /\ UNCHANGED <<written, failed, gatherUntil, recentlyActive, gatherers, lsn, result,
                   grp, covered, offerTo, tellTo, tellWhat, leadAgain, disk, toldTwice,
                   shorts>>

(***************************************************************************)
(* The flush, outside the lock.  A successful one makes durable what it    *)
(* reports: its target (closure and LSN front ends), or with GroupFlush    *)
(* any LSN it chooses from a small range: below the durable LSN, up to it, *)
(* short of the target, the target, or beyond it: up to what was requested *)
(* and further, to records appended whose callers have not asked yet (the  *)
(* log holds MaxWrites; a real flush drains whatever the buffer holds)     *)
(* (at most MaxShortFlushes short of the target per behaviour, to keep the *)
(* state space finite).  A failed or panicking one drops every record not  *)
(* yet durable, for good (Linux after EIO).                                *)
(***************************************************************************)
Drop ==
    /\ lost' = lost \cup ((1..written) \ onDisk)
    /\ UNCHANGED onDisk
    /\ failedOnce' = TRUE
    /\ durableAtFailure' = IF failedOnce THEN durableAtFailure ELSE onDisk

Covers ==
    IF Api # "flush" THEN {target}
    ELSE {c \in (IF durable > 0 THEN durable - 1 ELSE 0)..MaxWrites :
             c >= target \/ shorts < MaxShortFlushes}

RunFsync(t) ==
    /\ pc[t] = "fsync"
    /\ Alone
    /\ \/ \E c \in Covers:
             /\ covered' = [covered EXCEPT ![t] = c]
             /\ shorts' = IF c < target THEN shorts + 1 ELSE shorts
             /\ onDisk' = onDisk \cup ((1..c) \ lost)
             /\ SetPc(t, IF Bug = "NotifyBeforeIdle" THEN "finish_offered" ELSE "finish")
             /\ UNCHANGED <<lost, failedOnce, durableAtFailure>>
       \/ Failures /\ SetPc(t, "fail") /\ Drop /\ UNCHANGED <<covered, shorts>>
       \/ Panics /\ SetPc(t, "panic") /\ Drop /\ UNCHANGED <<covered, shorts>>
    /\ UNCHANGED <<protocol, mailboxes, gatherers, lsn, result, grp, offerTo, tellTo,
                   tellWhat, leadAgain, toldTwice>>

\* Bug NotifyBeforeIdle: the lead offered to `next` before finish_fsync locks.
EarlyOffer(t) ==
    /\ pc[t] = "finish_offered"
    /\ Alone
    /\ Offer(t, nextG, "finish")
    /\ UNCHANGED <<protocol, outcome, gatherers, lsn, result, grp, covered, offerTo,
                   tellTo, tellWhat, leadAgain, disk, toldTwice, shorts>>

\* The flush calls this manager again, on the leader's thread (nothing makes
\* it).  LSN API: it may mark a record written first (allowed), then commits.
ReentrantCall(t) ==
    /\ pc[t] = "fsync" /\ written < MaxWrites
    /\ Alone
    /\ written' = IF Api = "lsn" THEN written + 1 ELSE written
    /\ SetPc(t, "reentry")
    /\ UNCHANGED <<durable, phase, target, started, ridersG, riderLsns, nextG, nextLsns,
                   failed, gatherUntil, recentlyActive, mailboxes, gatherers, lsn,
                   result, grp, covered, offerTo, tellTo, tellWhat, leadAgain, disk,
                   toldTwice, shorts>>

\* refuse_reentry, in the re-entrant call's critical section: refused with
\* InvalidInput, nothing else changes; the flush goes on.  Bug NoReentryCheck:
\* the call goes on (closure API: its write counts) and joins `next`, whose
\* fsync cannot start before this one ends: it sleeps for ever.
RefuseReentry(t) ==
    /\ pc[t] = "reentry"
    /\ Alone
    /\ IF Bug = "NoReentryCheck"
       THEN /\ written' = IF Api = "closure" THEN written + 1 ELSE written
            /\ nextLsns' = Put(nextLsns, IF Api = "closure" THEN written + 1 ELSE written)
            /\ SetPc(t, "reentered")
       ELSE /\ SetPc(t, "fsync")
            /\ UNCHANGED <<written, nextLsns>>
    /\ UNCHANGED <<durable, phase, target, started, ridersG, riderLsns, nextG, failed,
                   gatherUntil, recentlyActive, mailboxes, gatherers, lsn, result, grp,
                   covered, offerTo, tellTo, tellWhat, leadAgain, disk, toldTwice, shorts>>

\* finish_fsync after a success, under the lock.  durable := max(durable,
\* covered); the riders are forgotten (those covered are served, the others
\* will Requeue) and their group is to be told Durable(durable), if it had
\* members; a next group covered whole is served too (told, replaced by a
\* fresh one).  The leader: served -> Ok; not served but progress -> it leads
\* again (phase Gathering) once the groups are told; no progress -> WriteZero.
\* Otherwise the phase is HandingOff (the lead offered to `next`) if next
\* has members, else Idle.  `early`: the riders were told already (bug
\* WakeBeforeDurable).
FinishUpdate(t, early) ==
    LET c == CASE Bug = "TargetAtFinish" -> written
               [] Bug = "DurableToTarget" -> target
               [] OTHER -> covered[t]
        d == Max(c, durable)
        told == IF Bug = "AckAboveCovered" THEN Max(target, d) ELSE d
        nextWhole == Size(nextLsns) > 0 /\ AllAtMost(nextLsns, told)
                     /\ Bug # "RedundantFsync"
        renewed == nextWhole \/ Bug = "OrphanedGroup"
        newNext == IF renewed THEN Fresh ELSE nextG
        newNextLsns == IF renewed THEN EmptyBag ELSE nextLsns
        served == CountAtMost(riderLsns, told) + IF nextWhole THEN Size(nextLsns) ELSE 0
        leaderServed == lsn[t] <= d
        again == ~leaderServed /\ d > durable
        handOff == ~again /\ Size(newNextLsns) > 0
        offerGroup == CASE ~handOff \/ Bug \in {"NoHandOff", "NotifyBeforeIdle"} -> NoGroup
                        [] Bug = "HandOffWrongGroup" -> ridersG
                        [] OTHER -> newNext
        tell == (IF Size(riderLsns) > 0 /\ ~early THEN <<ridersG>> ELSE <<>>)
                \o (IF nextWhole THEN <<nextG>> ELSE <<>>)
    IN
    /\ durable' = d
    /\ target' = 0
    /\ riderLsns' = EmptyBag
    /\ nextG' = newNext /\ nextLsns' = newNextLsns
    /\ IF renewed THEN Emptied(newNext) ELSE UNCHANGED mailboxes
    /\ recentlyActive' = served + (IF leaderServed THEN 1 ELSE 0) + Size(newNextLsns)
    /\ phase' = IF again THEN "Gathering" ELSE IF handOff THEN "HandingOff" ELSE "Idle"
    /\ offerTo' = [offerTo EXCEPT ![t] = offerGroup]
    /\ tellTo' = [tellTo EXCEPT ![t] = tell]
    /\ tellWhat' = [tellWhat EXCEPT ![t] = told]
    /\ leadAgain' = [leadAgain EXCEPT ![t] = again]
    /\ result' = [result EXCEPT ![t] = IF leaderServed THEN "ok"
                                       ELSE IF again THEN "none" ELSE "err"]
    /\ SetPc(t, IF offerGroup # NoGroup THEN "hand_off"
                ELSE IF tell # <<>> THEN "wake_riders"
                ELSE IF again THEN "lead_again" ELSE "idle")
    /\ UNCHANGED <<written, started, ridersG, failed, gatherUntil, gatherers, lsn, grp,
                   covered, disk, toldTwice, shorts>>

FinishFsync(t) ==
    /\ pc[t] = "finish"
    /\ IF Bug = "WakeBeforeDurable" /\ Size(riderLsns) > 0
       THEN \* the riders told at the top of the success branch, lock held
            /\ Take(t)
            /\ Finish(t, ridersG, Max(covered[t], durable), "finish_late")
            /\ UNCHANGED <<protocol, offered, gatherers, lsn, result, grp, covered,
                           offerTo, tellTo, tellWhat, leadAgain, disk, shorts>>
       ELSE Alone /\ FinishUpdate(t, FALSE)

\* Bug WakeBeforeDurable: the rest of the success branch.
FinishLate(t) == pc[t] = "finish_late" /\ Release(t) /\ FinishUpdate(t, TRUE)

\* What a finished leader does once it has told every group.
AfterTelling(t) == IF leadAgain[t] THEN "lead_again" ELSE "idle"

\* finish_fsync, after the lock: next.offer_lead().
HandOff(t) ==
    /\ pc[t] \in {"hand_off", "hand_off_failed"}
    /\ Alone
    /\ Offer(t, offerTo[t],
             IF pc[t] = "hand_off_failed" THEN "poison_late"
             ELSE IF tellTo[t] # <<>> THEN "wake_riders" ELSE AfterTelling(t))
    /\ offerTo' = [offerTo EXCEPT ![t] = NoGroup]
    /\ UNCHANGED <<protocol, outcome, gatherers, lsn, result, grp, covered, tellTo,
                   tellWhat, leadAgain, disk, toldTwice, shorts>>

\* wake_riders, after the lock: each group to tell is finished with
\* Durable(durable) (one notify_all each).
WakeRiders(t) ==
    /\ pc[t] = "wake_riders"
    /\ Alone
    /\ Finish(t, Head(tellTo[t]), tellWhat[t],
              IF Len(tellTo[t]) = 1 THEN AfterTelling(t) ELSE "wake_riders")
    /\ tellTo' = [tellTo EXCEPT ![t] = Tail(@)]
    /\ UNCHANGED <<protocol, offered, gatherers, lsn, result, grp, covered, offerTo,
                   tellWhat, leadAgain, disk, shorts>>

\* Bugs WedgeOnError, WedgeOnPanic: a failed or panicking fsync leaves no trace.
Wedge(o) ==
    \/ Bug = "WedgeOnError" /\ o = "err"
    \/ Bug = "WedgeOnPanic" /\ o = "panic"

\* poison, from finish_fsync after a failure or a panic, under the lock: the
\* failure recorded, both LSN bags cleared, phase Idle; both groups are to be
\* told Failed after the lock (WakeFailedGroups).
Poison(t, o) ==
    /\ ~Wedge(o)
    /\ failed' = IF Bug = "NoPoison" THEN failed ELSE TRUE
    /\ riderLsns' = EmptyBag /\ nextLsns' = EmptyBag
    /\ phase' = "Idle" /\ target' = 0
    /\ tellTo' = [tellTo EXCEPT ![t] = <<ridersG, nextG>>]
    /\ tellWhat' = [tellWhat EXCEPT ![t] = FailedOutcome]
    /\ SetPc(t, "wake_failed")
    /\ result' = [result EXCEPT ![t] = o]
    /\ UNCHANGED <<written, durable, started, ridersG, nextG, gatherUntil,
                   recentlyActive, mailboxes, gatherers, lsn, grp, covered, offerTo,
                   leadAgain, disk, toldTwice, shorts>>

\* wake_failed, after the lock: each group is finished with Failed.
WakeFailedGroups(t) ==
    /\ pc[t] = "wake_failed"
    /\ Alone
    /\ Finish(t, Head(tellTo[t]), FailedOutcome,
              IF Len(tellTo[t]) = 1 THEN "idle" ELSE "wake_failed")
    /\ tellTo' = [tellTo EXCEPT ![t] = Tail(@)]
    /\ UNCHANGED <<protocol, offered, gatherers, lsn, result, grp, covered, offerTo,
                   tellWhat, leadAgain, disk, shorts>>

\* Bugs WedgeOnError, WedgeOnPanic: the leader records nothing and leaves.
Wedged(t, o) ==
    /\ Wedge(o)
    /\ SetPc(t, "idle")
    /\ result' = [result EXCEPT ![t] = o]
    /\ UNCHANGED <<protocol, mailboxes, gatherers, lsn, grp, covered, offerTo, tellTo,
                   tellWhat, leadAgain, disk, toldTwice, shorts>>

\* Bug WakeBeforePoison: the failed leader offers the lead to `next` (phase
\* HandingOff) before it records the failure (LatePoison).
WakeBeforePoison(t) ==
    /\ phase' = "HandingOff" /\ target' = 0
    /\ offerTo' = [offerTo EXCEPT ![t] = nextG]
    /\ SetPc(t, "hand_off_failed")
    /\ UNCHANGED <<written, durable, started, ridersG, riderLsns, nextG, nextLsns,
                   failed, gatherUntil, recentlyActive, mailboxes, gatherers, lsn,
                   result, grp, covered, tellTo, tellWhat, leadAgain, disk, toldTwice,
                   shorts>>

\* finish_fsync after the flush returned Err: poison; the leader returns it.
FailFsync(t) ==
    /\ pc[t] = "fail" /\ Alone
    /\ IF Bug = "WakeBeforePoison" /\ Size(nextLsns) > 0
       THEN WakeBeforePoison(t)
       ELSE Poison(t, "err") \/ Wedged(t, "err")

\* finish_fsync after the flush panicked: poison; the panic goes on.
PanicFsync(t) == pc[t] = "panic" /\ Alone /\ (Poison(t, "panic") \/ Wedged(t, "panic"))

\* Bug WakeBeforePoison: the poison, in a critical section of its own.
LatePoison(t) == pc[t] = "poison_late" /\ Alone /\ Poison(t, "err")

\* Bug SoloFsyncOnTimeout: the timed-out member's own fsync, outside the
\* protocol; it returns its result.
SoloFsync(t) ==
    /\ pc[t] = "solo_fsync"
    /\ Alone
    /\ \/ /\ onDisk' = onDisk \cup ((1..written) \ lost)
          /\ result' = [result EXCEPT ![t] = "ok"]
          /\ UNCHANGED <<lost, failedOnce, durableAtFailure>>
       \/ Failures /\ Drop /\ result' = [result EXCEPT ![t] = "err"]
    /\ SetPc(t, "idle")
    /\ grp' = [grp EXCEPT ![t] = NoGroup]
    /\ UNCHANGED <<protocol, mailboxes, gatherers, lsn, covered, offerTo, tellTo,
                   tellWhat, leadAgain, toldTwice, shorts>>

-----------------------------------------------------------------------------

\* A thread's steps that it must eventually take once they stay possible:
\* everything but starting a call, a spurious wake-up and a re-entrant call.
Progress(t) ==
    \/ FastPath(t) \/ RequestFlush(t) \/ Arrive(t) \/ Return(t) \/ Wait(t)
    \/ Look(t) \/ DeadlinePasses(t) \/ WakeServed(t) \/ WakeFailed(t) \/ Requeue(t)
    \/ TakeLead(t) \/ Timeout(t) \/ BecomeLeader(t) \/ Gather(t) \/ GatherDeadline(t)
    \/ StartFsync(t) \/ RunFsync(t) \/ RefuseReentry(t) \/ FinishFsync(t)
    \/ HandOff(t) \/ WakeRiders(t) \/ FailFsync(t) \/ PanicFsync(t)
    \/ WakeFailedGroups(t)
    \/ EarlyOffer(t) \/ FinishLate(t) \/ LatePoison(t) \/ SoloFsync(t)   \* bugs only

Next ==
    \E t \in Threads:
        \/ CommitArrival(t) \/ MarkWritten(t) \/ Commit(t) \/ Flush(t)
        \/ SpuriousWakeup(t) \/ ReentrantCall(t) \/ Progress(t)

(***************************************************************************)
(* Fairness: strong fairness on each thread's progress, the steps it takes *)
(* on its own once it has started a call.  Strong, because a step that     *)
(* needs the mutex is enabled only while nobody holds it, and a thread     *)
(* that takes the lock again and again (a member timing out while a flush  *)
(* hangs) would starve it under weak fairness; we assume the mutex is not  *)
(* unfair forever to a thread that keeps asking.  So: the flush returns; a *)
(* woken member looks at its mailbox; a gather interval ends; a deadline   *)
(* passes if timeouts are on.  Not fair: starting a call, a spurious       *)
(* wake-up, a re-entrant call.  The flush returns even if it calls back    *)
(* again and again: strong fairness on RunFsync on its own.                *)
(***************************************************************************)
Fairness == \A t \in Threads: SF_vars(Progress(t)) /\ SF_vars(RunFsync(t))

Spec == Init /\ [][Next]_vars /\ Fairness
SafetySpec == Init /\ [][Next]_vars

-----------------------------------------------------------------------------
(* Properties *)

\* A caller told Ok has its record durable: made so by a completed flush
\* that covered it.
FsyncBeforeReturn == \A t \in Threads: result[t] = "ok" => lsn[t] \in onDisk

\* A caller told Ok finds durable_lsn() covering its LSN (a served member
\* returns without the lock: only the order of the steps ensures it).
DurableBeforeOk == \A t \in Threads: result[t] = "ok" => lsn[t] <= durable

\* Once an fsync has failed, Ok goes only to records that were durable before.
NoOkAfterFailure ==
    [][\A t \in Threads:
         (result'[t] = "ok" /\ result[t] # "ok" /\ failedOnce')
            => lsn[t] \in durableAtFailure]_vars

\* A member whose group was told a durable LSN covering it is told Ok, even if a
\* later fsync has failed meanwhile.  (A member the flush did not cover decides
\* again, failure first: Err, whatever a later flush covered.)
ServedWaitersGetOk ==
    [][\A t \in Threads:
         (/\ pc[t] \in WaiterPCs /\ pc'[t] = "idle" /\ grp[t] # NoGroup
          /\ outcome[grp[t]] >= lsn[t])
            => result'[t] = "ok"]_vars

\* The durable LSN never decreases, and everything up to it is on the disk.
DurableMonotonic == [][durable' >= durable]_durable
DurableOnDisk == 1..durable \subseteq onDisk

\* At most one fsync in flight.
AtMostOneFsync == Cardinality({t \in Threads : pc[t] \in InFlightPCs}) <= 1

\* Nobody starts an fsync once the manager knows of a failure.
NoFsyncAfterPoison == failed => \A t \in Threads: pc[t] \notin InFlightPCs

\* No flush runs with nothing to flush: its target is beyond the durable LSN
\* (a next group covered whole is served, not offered the lead).
NoRedundantFsync == phase = "Syncing" => target > durable

\* Each group is told its outcome once (debug_assert in Group::finish).
GroupToldOnce == ~toldTwice

\* A finished leader is about to tell g.
AboutToBeTold(g) == \E u \in Threads: pc[u] \in TellerPCs /\ g \in Range(tellTo[u])
Told(g) == outcome[g] # NoOutcome \/ AboutToBeTold(g)
Members(g) == {u \in Threads : pc[u] \in WaiterPCs /\ grp[u] = g}
MemberBag(g) == [r \in Records |-> Cardinality({u \in Members(g) : lsn[u] = r})]

\* A member with no news that needs some.
Waiting(p) ==
    pc[p] \in {"wait", "check", "asleep", "timed_out"} /\ outcome[grp[p]] = NoOutcome
\* Somebody leads (a finished leader that leads again included).
Leading ==
    {u \in Threads : pc[u] \in LeaderPCs}
    \cup {u \in Threads : leadAgain[u] /\ pc[u] \in {"hand_off", "wake_riders"}}
\* The lead is on its way to `next`: about to be offered, offered and not yet
\* taken, taken and about to be claimed, or claimed (BecomeLeader next).
HandOffPending ==
    \/ \E u \in Threads: pc[u] \in {"hand_off", "hand_off_failed"} /\ offerTo[u] = nextG
    \/ offered[nextG]
    \/ \E q \in Threads: pc[q] = "take_lead" /\ grp[q] = nextG
    \/ \E q \in Threads: pc[q] = "lead"

\* A member is never left waiting while nobody leads, no hand-off is pending
\* and nobody is about to tell its group.
NoWaiterWithoutLeader ==
    \A p \in Threads:
        Waiting(p) => (Leading # {} \/ HandOffPending \/ AboutToBeTold(grp[p]))

\* Each member has a way out without its timeout (protocol.rs's invariant):
\* its group is about to be told, or is the riders of the fsync in flight, or
\* `next` while a leader gathers or syncs, or while the lead is on its way
\* to it (HandingOff).
WaitersHaveAWayOut ==
    \A p \in Threads: Waiting(p) =>
        \/ AboutToBeTold(grp[p])
        \/ /\ grp[p] = ridersG
           /\ \E u \in Threads: pc[u] \in InFlightPCs \ {"solo_fsync", "reentered"}
        \/ /\ grp[p] = nextG
           /\ \/ phase \in {"Gathering", "Syncing"} /\ Leading # {}
              \/ phase = "HandingOff" /\ HandOffPending

\* The bookkeeping means what protocol.rs says: riders exist only while an
\* fsync runs, and it covers them and its leader; next is empty when Idle and
\* beyond the target while syncing; the phase says whether somebody leads;
\* each group not yet told is `riders` or `next`, and its bag counts exactly
\* its members' LSNs.
GroupCounts ==
    /\ Size(riderLsns) > 0 => phase = "Syncing"
    /\ AllAtMost(riderLsns, target)
    /\ \A u \in Threads: pc[u] \in {"fsync", "reentry", "finish", "fail", "panic"}
                          => lsn[u] <= target
    /\ phase = "Syncing" => \A r \in Records: nextLsns[r] > 0 => r > target
    /\ phase = "Idle" => Size(nextLsns) = 0
    /\ (phase \in {"Gathering", "Syncing"}) = (Leading \ {u \in Threads : pc[u] = "lead"} # {})
    /\ \A p \in Threads: pc[p] \in WaiterPCs /\ ~Told(grp[p]) => grp[p] \in {ridersG, nextG}
    /\ ~Told(ridersG) => MemberBag(ridersG) = riderLsns
    /\ ~Told(nextG) => MemberBag(nextG) = nextLsns

\* Liveness: every call returns (Ok, Err or the panic of its own closure).
EveryRequestReturns == \A t \in Threads: pc[t] # "idle" ~> pc[t] = "idle"

Symmetry == Permutations(Threads)
=============================================================================
