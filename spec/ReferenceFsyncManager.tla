------------------------- MODULE ReferenceFsyncManager -------------------------
(***************************************************************************)
(* The reference design this crate replaces: noxu-log's FsyncManager, a    *)
(* port of Berkeley DB JE's FSyncManager (../shared/reference/), modelled  *)
(* as GroupCommit.tla models this crate, so that TLC can check the same    *)
(* properties against it and show each fault of known-faults.md as a      *)
(* counterexample.                                                         *)
(*                                                                         *)
(* The design: a state mutex guards `work_in_progress` and the group that  *)
(* new arrivals join (`next_fsync_waiters`).  A caller that finds no work  *)
(* in progress leads: it takes the current group as its own, swaps in a    *)
(* fresh one, runs the fsync, wakes its group (`wakeup_all`, under the     *)
(* group's own mutex) and then, under the state mutex, notifies one member *)
(* of the next group (`wakeup_one`, a bare notify_one) and clears          *)
(* `work_in_progress`.  A waiter sleeps in `wait_for_event` on its group's *)
(* condvar; when it wakes and the group is not done and has no leader, it  *)
(* becomes the leader; when its deadline has passed, it fsyncs on its own. *)
(*                                                                         *)
(* Granularity: each action is one critical section (of the state mutex   *)
(* or of one group's mutex) or one step outside any lock, taken atomically *)
(* (the reference has two kinds of mutex, so a single `lock` variable as in *)
(* GroupCommit.tla would not fit).  Gathering (grpc_wait) is left out: no  *)
(* fault below needs it.  Only the closure API exists.                     *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets, TLC

CONSTANTS
    Threads,     \* the callers (model values; symmetric)
    MaxWrites,   \* calls in all (each call is one write), to keep the model finite
    Timeouts,    \* TRUE: a waiter's 500 ms deadline may pass
    Spurious,    \* TRUE: a wait may end without a notify
    Failures,    \* TRUE: an fsync may return an error
    Panics,      \* TRUE: an fsync closure may panic
    \* TRUE closes F1's window: a waiter joins its group and goes to sleep in
    \* one step.  Not the reference's behaviour; it lets the configs for F2,
    \* F3 and F6 show those faults rather than F1 again (TLC reports the
    \* shortest counterexample, and F1's is the shortest of all).
    JoinAndSleepAtomically,
    \* TRUE adds the first fix one would try for F4 (F11): a sticky `poisoned`
    \* flag, set under the state mutex by a leader whose fsync failed and
    \* checked at every decision under that mutex.
    StickyPoison

ASSUME {Timeouts, Spurious, Failures, Panics, JoinAndSleepAtomically, StickyPoison}
           \subseteq BOOLEAN

Records == 1..MaxWrites
GroupIds == 0..MaxWrites   \* group 0 exists from the start; each leader makes one more

VARIABLES
    \* --- FsyncState, under the state mutex ---
    written,    \* calls so far; a call's record is its arrival number (its LSN)
    wip,        \* work_in_progress
    next,       \* next_fsync_waiters: the group new arrivals join
    made,       \* groups made so far (the next fresh group's id)
    poisoned,   \* the F11 variant's sticky failure flag (always FALSE otherwise)
    \* --- each FSyncGroup, under its own mutex ---
    done,       \* done[g]: work_done
    leaderOf,   \* leaderOf[g]: leader_exists
    error,      \* error[g]: the group's fsync failed (error.is_some())
    asleep,     \* asleep[g]: threads blocked on the group's condvar
    \* --- each caller's locals ---
    pc,         \* what the thread does next (see PCs)
    lsn,        \* its record
    myGroup,    \* my_group: the group it joined as a waiter
    leadGroup,  \* in_progress_group: the group it serves as leader
    late,       \* its wait's deadline has passed
    covers,     \* the records its fsync covers (written when it started)
    result,     \* "none" while running, then "ok", "err" or "panic"
    \* --- the disk and the history, as in GroupCommit.tla ---
    onDisk, lost, failedOnce, durableAtFailure

vars == <<written, wip, next, made, poisoned, done, leaderOf, error, asleep, pc, lsn,
          myGroup, leadGroup, late, covers, result, onDisk, lost, failedOnce,
          durableAtFailure>>

(***************************************************************************)
(*   idle            between calls                                         *)
(*   join_wait       joined my_group; about to enter wait_for_event        *)
(*   asleep          blocked on my_group's condvar                         *)
(*   woken           out of the wait set; about to check, under my_group's *)
(*                   mutex, what the wake-up means                         *)
(*   promoted        wait_for_event said DoLeaderFsync                     *)
(*   timeout_fsync   wait_for_event said DoTimeoutFsync                    *)
(*   leader_fsync    running the fsync as the leader                       *)
(*   solo_fsync      running an fsync of its own (timed out, or promoted   *)
(*                   while another fsync runs)                             *)
(*   wake_group      leader: about to wakeup_all its group                 *)
(*   hand_off        leader: about to wakeup_one the next group and clear  *)
(*                   work_in_progress                                      *)
(***************************************************************************)
PCs == {"idle", "join_wait", "asleep", "woken", "promoted", "timeout_fsync",
        "leader_fsync", "solo_fsync", "wake_group", "hand_off"}

TypeOK ==
    /\ written \in 0..MaxWrites /\ wip \in BOOLEAN
    /\ next \in GroupIds /\ made \in 1..MaxWrites + 1 /\ poisoned \in BOOLEAN
    /\ done \in [GroupIds -> BOOLEAN] /\ leaderOf \in [GroupIds -> BOOLEAN]
    /\ error \in [GroupIds -> BOOLEAN] /\ asleep \in [GroupIds -> SUBSET Threads]
    /\ pc \in [Threads -> PCs] /\ lsn \in [Threads -> 0..MaxWrites]
    /\ myGroup \in [Threads -> GroupIds] /\ leadGroup \in [Threads -> GroupIds]
    /\ late \in [Threads -> BOOLEAN] /\ covers \in [Threads -> SUBSET Records]
    /\ result \in [Threads -> {"none", "ok", "err", "panic"}]
    /\ onDisk \subseteq Records /\ lost \subseteq Records
    /\ failedOnce \in BOOLEAN /\ durableAtFailure \subseteq Records

Init ==
    /\ written = 0 /\ wip = FALSE /\ next = 0 /\ made = 1 /\ poisoned = FALSE
    /\ done = [g \in GroupIds |-> FALSE] /\ leaderOf = [g \in GroupIds |-> FALSE]
    /\ error = [g \in GroupIds |-> FALSE] /\ asleep = [g \in GroupIds |-> {}]
    /\ pc = [t \in Threads |-> "idle"] /\ lsn = [t \in Threads |-> 0]
    /\ myGroup = [t \in Threads |-> 0] /\ leadGroup = [t \in Threads |-> 0]
    /\ late = [t \in Threads |-> FALSE] /\ covers = [t \in Threads |-> {}]
    /\ result = [t \in Threads |-> "none"]
    /\ onDisk = {} /\ lost = {} /\ failedOnce = FALSE /\ durableAtFailure = {}

NotifyOne(S) == IF S = {} THEN {{}} ELSE {{u} : u \in S}
SetPc(t, s) == pc' = [pc EXCEPT ![t] = s]
Finish(t, r) == SetPc(t, "idle") /\ result' = [result EXCEPT ![t] = r]

\* Becoming the leader under the state mutex: take group g as one's own, put a
\* fresh group in its place, start the fsync (it covers the w records written).
Lead(t, g, w) ==
    /\ wip' = TRUE
    /\ leadGroup' = [leadGroup EXCEPT ![t] = g]
    /\ next' = made /\ made' = made + 1
    /\ covers' = [covers EXCEPT ![t] = 1..w]
    /\ SetPc(t, "leader_fsync")

-----------------------------------------------------------------------------

\* fsync(), phase 1, under the state mutex: lead, or join the next group.
Enter(t) ==
    /\ pc[t] = "idle" /\ written < MaxWrites
    /\ written' = written + 1
    /\ lsn' = [lsn EXCEPT ![t] = written + 1]
    /\ late' = [late EXCEPT ![t] = FALSE]
    /\ IF poisoned
       THEN /\ Finish(t, "err")
            /\ UNCHANGED <<wip, next, made, myGroup, leadGroup, covers, asleep>>
       ELSE IF wip
       THEN /\ myGroup' = [myGroup EXCEPT ![t] = next]
            /\ result' = [result EXCEPT ![t] = "none"]
            /\ IF JoinAndSleepAtomically
               THEN asleep' = [asleep EXCEPT ![next] = @ \cup {t}] /\ SetPc(t, "asleep")
               ELSE UNCHANGED asleep /\ SetPc(t, "join_wait")
            /\ UNCHANGED <<wip, next, made, leadGroup, covers>>
       ELSE /\ Lead(t, next, written + 1)
            /\ result' = [result EXCEPT ![t] = "none"]
            /\ UNCHANGED <<myGroup, asleep>>
    /\ UNCHANGED <<poisoned, done, leaderOf, error, onDisk, lost, failedOnce,
                   durableAtFailure>>

\* wait_for_event, entered under my_group's mutex: return at once if the group
\* is done, otherwise wait.  (F1: the leader's wakeup_one may already have
\* gone by, unheard.)
EnterWait(t) ==
    /\ pc[t] = "join_wait"
    /\ LET g == myGroup[t] IN
       IF done[g]
       THEN Finish(t, IF error[g] THEN "err" ELSE "ok") /\ UNCHANGED asleep
       ELSE /\ asleep' = [asleep EXCEPT ![g] = @ \cup {t}]
            /\ SetPc(t, "asleep") /\ UNCHANGED result
    /\ UNCHANGED <<written, wip, next, made, poisoned, done, leaderOf, error, lsn,
                   myGroup, leadGroup, late, covers, onDisk, lost, failedOnce,
                   durableAtFailure>>

SpuriousWakeup(t) ==
    /\ Spurious /\ pc[t] = "asleep"
    /\ asleep' = [asleep EXCEPT ![myGroup[t]] = @ \ {t}]
    /\ SetPc(t, "woken")
    /\ UNCHANGED <<written, wip, next, made, poisoned, done, leaderOf, error, lsn,
                   myGroup, leadGroup, late, covers, result, onDisk, lost,
                   failedOnce, durableAtFailure>>

DeadlinePasses(t) ==
    /\ Timeouts /\ pc[t] = "asleep"
    /\ asleep' = [asleep EXCEPT ![myGroup[t]] = @ \ {t}]
    /\ late' = [late EXCEPT ![t] = TRUE]
    /\ SetPc(t, "woken")
    /\ UNCHANGED <<written, wip, next, made, poisoned, done, leaderOf, error, lsn,
                   myGroup, leadGroup, covers, result, onDisk, lost, failedOnce,
                   durableAtFailure>>

\* wait_for_event after a wake-up, under my_group's mutex: done (return the
\* group's outcome: take_error), else lead if the group has no leader yet
\* (F3: whatever woke it), else fsync alone if late, else wait again.
WaitCheck(t) ==
    /\ pc[t] = "woken"
    /\ LET g == myGroup[t] IN
       IF done[g]
       THEN Finish(t, IF error[g] THEN "err" ELSE "ok")
            /\ UNCHANGED <<leaderOf, asleep>>
       ELSE IF ~leaderOf[g]
       THEN leaderOf' = [leaderOf EXCEPT ![g] = TRUE] /\ SetPc(t, "promoted")
            /\ UNCHANGED <<asleep, result>>
       ELSE IF late[t]
       THEN SetPc(t, "timeout_fsync") /\ UNCHANGED <<leaderOf, asleep, result>>
       ELSE asleep' = [asleep EXCEPT ![g] = @ \cup {t}] /\ SetPc(t, "asleep")
            /\ UNCHANGED <<leaderOf, result>>
    /\ UNCHANGED <<written, wip, next, made, poisoned, done, error, lsn, myGroup,
                   leadGroup, late, covers, onDisk, lost, failedOnce, durableAtFailure>>

\* DoLeaderFsync, under the state mutex: if an fsync is running, do one of one's
\* own anyway (F7); otherwise lead my_group, replacing next_fsync_waiters with a
\* fresh group whether or not it is still my_group (F2).
Promoted(t) ==
    /\ pc[t] = "promoted"
    /\ IF poisoned
       THEN Finish(t, "err") /\ UNCHANGED <<wip, next, made, leadGroup, covers>>
       ELSE IF wip
       THEN /\ covers' = [covers EXCEPT ![t] = 1..written]
            /\ SetPc(t, "solo_fsync")
            /\ UNCHANGED <<wip, next, made, leadGroup, result>>
       ELSE Lead(t, myGroup[t], written) /\ UNCHANGED result
    /\ UNCHANGED <<written, poisoned, done, leaderOf, error, asleep, lsn, myGroup,
                   late, onDisk, lost, failedOnce, durableAtFailure>>

\* DoTimeoutFsync: fsync alone (the F11 variant first checks the poison under
\* the state mutex).
TimeoutFsync(t) ==
    /\ pc[t] = "timeout_fsync"
    /\ IF poisoned
       THEN Finish(t, "err") /\ UNCHANGED covers
       ELSE /\ covers' = [covers EXCEPT ![t] = 1..written]
            /\ SetPc(t, "solo_fsync") /\ UNCHANGED result
    /\ UNCHANGED <<written, wip, next, made, poisoned, done, leaderOf, error, asleep,
                   lsn, myGroup, leadGroup, late, onDisk, lost, failedOnce,
                   durableAtFailure>>

\* The fsync closure returns.  The disk as in GroupCommit.tla: success makes
\* what it covers durable (bar what was lost); failure or panic drops every
\* record not yet durable.  A leader goes on to wake its group; anyone else
\* returns the result.  A panic unwinds out of fsync() at once: the leader
\* wakes nobody and never clears work_in_progress (F6).
Drop ==
    /\ lost' = lost \cup ((1..written) \ onDisk)
    /\ UNCHANGED onDisk
    /\ failedOnce' = TRUE
    /\ durableAtFailure' = IF failedOnce THEN durableAtFailure ELSE onDisk

FsyncReturns(t) ==
    /\ pc[t] \in {"leader_fsync", "solo_fsync"}
    /\ LET after == IF pc[t] = "leader_fsync" THEN "wake_group" ELSE "idle" IN
       \/ /\ onDisk' = onDisk \cup (covers[t] \ lost)
          /\ UNCHANGED <<lost, failedOnce, durableAtFailure>>
          /\ SetPc(t, after) /\ result' = [result EXCEPT ![t] = "ok"]
       \/ /\ Failures /\ Drop
          /\ SetPc(t, after) /\ result' = [result EXCEPT ![t] = "err"]
       \/ /\ Panics /\ Drop
          /\ Finish(t, "panic")
    /\ UNCHANGED <<written, wip, next, made, poisoned, done, leaderOf, error, asleep,
                   lsn, myGroup, leadGroup, late, covers>>

\* wakeup_all / wakeup_all_with_error, under the group's mutex (the notify_all
\* just after it, outside, is merged in: a thread that locks the group between
\* the two sees it done and does not wait).
WakeGroup(t) ==
    /\ pc[t] = "wake_group"
    /\ LET g == leadGroup[t] IN
       /\ done' = [done EXCEPT ![g] = TRUE]
       /\ error' = [error EXCEPT ![g] = (result[t] = "err")]
       /\ asleep' = [asleep EXCEPT ![g] = {}]
       /\ pc' = [u \in Threads |->
                   IF u = t THEN "hand_off"
                   ELSE IF u \in asleep[g] THEN "woken" ELSE pc[u]]
    /\ UNCHANGED <<written, wip, next, made, poisoned, leaderOf, lsn, myGroup,
                   leadGroup, late, covers, result, onDisk, lost, failedOnce,
                   durableAtFailure>>

\* Under the state mutex: next_fsync_waiters.wakeup_one() (a bare notify_one on
\* whatever group is next now, sent to nobody if nobody sleeps there yet: F1),
\* then work_in_progress = false; the leader returns its fsync's result.
HandOff(t) ==
    /\ pc[t] = "hand_off"
    /\ \E w \in NotifyOne(asleep[next]):
          /\ asleep' = [asleep EXCEPT ![next] = @ \ w]
          /\ pc' = [u \in Threads |->
                      IF u = t THEN "idle" ELSE IF u \in w THEN "woken" ELSE pc[u]]
    /\ wip' = FALSE
    /\ poisoned' = (poisoned \/ (StickyPoison /\ result[t] = "err"))
    /\ UNCHANGED <<written, next, made, done, leaderOf, error, lsn, myGroup,
                   leadGroup, late, covers, result, onDisk, lost, failedOnce,
                   durableAtFailure>>

Next ==
    \E t \in Threads:
        \/ Enter(t) \/ EnterWait(t) \/ SpuriousWakeup(t) \/ DeadlinePasses(t)
        \/ WaitCheck(t) \/ Promoted(t) \/ TimeoutFsync(t) \/ FsyncReturns(t)
        \/ WakeGroup(t) \/ HandOff(t)

Spec == Init /\ [][Next]_vars

-----------------------------------------------------------------------------
(* The properties of GroupCommit.tla, for this design *)

FsyncBeforeReturn == \A t \in Threads: result[t] = "ok" => lsn[t] \in onDisk

NoOkAfterFailure ==
    [][\A t \in Threads:
         (result'[t] = "ok" /\ result[t] # "ok" /\ failedOnce')
            => lsn[t] \in durableAtFailure]_vars

InFlight == {t \in Threads : pc[t] \in {"leader_fsync", "solo_fsync"}}
AtMostOneFsync == Cardinality(InFlight) <= 1

\* Never a thread asleep in a group while nobody leads and no hand-off is
\* pending.  Here a leader is a thread from Lead until HandOff; a hand-off is
\* pending when a thread out of the wait set will lead as soon as it runs: it
\* was woken in a group that is neither done nor led, or it was promoted and
\* no fsync is in progress.
Sleeping == UNION {asleep[g] : g \in GroupIds}
Leading == {u \in Threads : pc[u] \in {"leader_fsync", "wake_group", "hand_off"}}
HandOffPending ==
    \E u \in Threads:
        \/ pc[u] = "woken" /\ ~done[myGroup[u]] /\ ~leaderOf[myGroup[u]]
        \/ pc[u] = "promoted" /\ ~wip /\ ~poisoned
NoWaiterWithoutLeader == Sleeping # {} => (Leading # {} \/ HandOffPending)

Symmetry == Permutations(Threads)
=============================================================================
