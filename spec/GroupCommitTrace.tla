--------------------------- MODULE GroupCommitTrace ---------------------------
(***************************************************************************)
(* Trace validation: is a log of the implementation a behaviour of         *)
(* GroupCommit?  (After tlaplus/Examples, specifications/ewd998/           *)
(* EWD998ChanTrace.tla.)                                                   *)
(*                                                                         *)
(* The log comes from the crate built with the `trace` feature            *)
(* (src/trace.rs): a header line (front end, gathering policy), then one  *)
(* line per step taken under the protocol's lock, in lock order, with the  *)
(* thread, the action's name, the caller's LSN and the state after the     *)
(* step (the LSN bags `riders` and `next_group` as their sizes).  TLC looks *)
(* for a behaviour of GroupCommit whose logged steps are exactly the log's *)
(* lines, in order, each leaving the recorded state; the steps the log     *)
(* cannot show may happen anywhere in between, as the spec allows: those   *)
(* taken without the lock (HandOff, WakeRiders, WakeFailedGroups; a woken  *)
(* member looking at its mailbox or returning, WakeServed, WakeFailed; a   *)
(* deadline passing; the flush itself, with the LSN it reported, which the *)
(* next FinishFsync line pins down; Flush's choice of LSN and FastPath), a *)
(* re-entrant call's                                                       *)
(* refusal, and a gathering leader going back to sleep.  The log is        *)
(* accepted when such a behaviour reaches its last line.                   *)
(*                                                                         *)
(* verify/tlc writes the config: TraceFile, and the constants of           *)
(* GroupCommit taken from the log (TraceThreads, TraceApi, ...).           *)
(***************************************************************************)
EXTENDS GroupCommit, Integers, Json, Sequences, TLC

CONSTANT TraceFile   \* the ndjson log

JsonLog == ndJsonDeserialize(TraceFile)
Header == JsonLog[1]
Log == SubSeq(JsonLog, 2, Len(JsonLog))

\* GroupCommit's constants, as the run had them.
TraceThreads == {Log[i].thread : i \in DOMAIN Log}
TraceNoThread == -1   \* thread ids are natural numbers
TraceApi == Header.api
TraceGathering == Header.gathering
TraceThreshold == Header.threshold
\* (A GroupFlush flush may report more than was requested: durable counts too.)
TraceMaxWrites ==
    LET w == {Log[i].written : i \in DOMAIN Log} \cup {Log[i].durable : i \in DOMAIN Log} IN
    IF w = {} THEN 0 ELSE CHOOSE m \in w : \A x \in w : x <= m
\* Every flush of the run may have reported less than its target.
TraceMaxShortFlushes == Cardinality({i \in DOMAIN Log : Log[i].action = "StartFsync"})

VARIABLE cursor   \* the next log line to match (1..Len(Log) + 1)
traceVars == <<vars, cursor>>

TraceInit == Init /\ cursor = 1

\* The state a step leaves behind is the one the line recorded.
Matches(line) ==
    /\ written' = line.written
    /\ durable' = line.durable
    /\ phase' = line.phase
    /\ target' = line.target
    /\ started' = line.started
    /\ Size(riderLsns') = line.riders
    /\ Size(nextLsns') = line.next_group
    /\ failed' = line.failed
    /\ gatherUntil' = line.gather_until
    /\ recentlyActive' = line.recently_active
    \* (for MarkWritten, `lsn` is the LSN marked: `written` above)
    /\ line.action # "MarkWritten" => lsn'[line.thread] = line.lsn

\* mark_written of the LSN already marked (allowed: it must not go backwards)
\* is a critical section that changes nothing: a stuttering step of GroupCommit.
ReMark(t) == pc[t] = "idle" /\ lock = NoThread /\ UNCHANGED vars

\* The spec action a line names, by thread t.  "Gather" is logged once, when the
\* gather loop ends; its turns that go back to sleep are not.
Logged(a, t) ==
    \/ a = "CommitArrival" /\ CommitArrival(t)
    \/ a = "MarkWritten" /\ (MarkWritten(t) \/ ReMark(t) \/ (Api = "lsn" /\ ReentrantCall(t)))
    \/ a = "RequestFlush" /\ RequestFlush(t)
    \/ a = "Arrive" /\ Arrive(t)
    \/ a = "Return" /\ Return(t)
    \/ a = "Wait" /\ Wait(t)
    \/ a = "Requeue" /\ Requeue(t)
    \/ a = "TakeLead" /\ TakeLead(t)
    \/ a = "Timeout" /\ Timeout(t)
    \/ a = "BecomeLeader" /\ BecomeLeader(t)
    \/ a = "Gather" /\ Gather(t) /\ pc'[t] = "start_fsync"
    \/ a = "StartFsync" /\ StartFsync(t)
    \/ a = "FinishFsync" /\ FinishFsync(t)
    \/ a = "FailFsync" /\ FailFsync(t)
    \/ a = "PanicFsync" /\ PanicFsync(t)

LoggedStep ==
    /\ cursor <= Len(Log)
    /\ LET line == Log[cursor] IN
       /\ Logged(line.action, line.thread)
       /\ Matches(line)
    /\ cursor' = cursor + 1

\* What the log cannot show.
HiddenStep ==
    /\ \E t \in Threads:
          \/ Commit(t) \/ Flush(t) \/ FastPath(t) \/ SpuriousWakeup(t)
          \/ DeadlinePasses(t) \/ Look(t) \/ GatherDeadline(t) \/ RunFsync(t)
          \/ Gather(t) /\ pc'[t] = "gathering"
          \/ HandOff(t) \/ WakeRiders(t) \/ WakeFailedGroups(t)
          \/ WakeServed(t) \/ WakeFailed(t)
          \/ (Api = "closure" /\ ReentrantCall(t)) \/ RefuseReentry(t)
    /\ UNCHANGED cursor

TraceNext == LoggedStep \/ HiddenStep
TraceSpec == TraceInit /\ [][TraceNext]_traceVars

\* The properties of GroupCommit hold along the way (they are cheap here).
TraceInvariant ==
    /\ TypeOK /\ FsyncBeforeReturn /\ DurableBeforeOk /\ DurableOnDisk
    /\ AtMostOneFsync /\ NoFsyncAfterPoison /\ NoWaiterWithoutLeader
    /\ WaitersHaveAWayOut /\ GroupToldOnce /\ GroupCounts /\ NoRedundantFsync

(* Verdict.  The constraint keeps, in TLC register 1, the furthest line any *)
(* behaviour matched; once a behaviour has matched them all, it says so and *)
(* stops TLC.  Otherwise the postcondition reports the line no behaviour     *)
(* could match.                                                             *)
ASSUME TLCSet(1, 0)
TraceProgress ==
    /\ TLCSet(1, IF cursor - 1 > TLCGet(1) THEN cursor - 1 ELSE TLCGet(1))
    /\ cursor > Len(Log) =>
          /\ PrintT(<<"trace accepted", Len(Log)>>)
          /\ TLCSet("exit", TRUE)
TraceVerdict ==
    TLCGet(1) = Len(Log) \/
    PrintT(<<"trace rejected at line", TLCGet(1) + 2, "of the file:",
             Log[TLCGet(1) + 1]>>)
=============================================================================
