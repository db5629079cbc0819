@0xb7a1c39e5f2d4a10;
# The rack's wire schema: every message between daemons and applications is one `Message`.
# A request carries a fresh nonzero `seq`; its reply echoes it. Messages a daemon sends on
# its own initiative (heartbeats, notices) carry seq 0 unless they expect a reply.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("disagg::proto");

enum ElementKind {
  rackmmu @0;
  rackmon @1;
  compute @2;
  memory @3;
  client @4;     # rackctl, tests, applications: not part of the rack's element table
}

enum Health {
  healthy @0;
  suspect @1;    # missed a heartbeat or more, not yet declared failed
  failed @2;     # declared failed: dead, hung past the limit, or hung up
}

# Sent by an element to the Rack MMU and to the rack monitor as its first message.
struct Register {
  name @0 :Text;            # rack-wide element name: "cpu0", "mem1", ...
  kind @1 :ElementKind;
  capacityBytes @2 :UInt64; # memory element: pool size; compute element: cache budget
}

struct Registered {
  elementId @0 :UInt32;
}

# Mirrors absl::StatusCode so that a daemon's error reaches the caller as the same Status.
struct Error {
  code @0 :UInt32;
  message @1 :Text;
}

struct Ping {
  sentNanos @0 :UInt64;     # sender's CLOCK_MONOTONIC; echoed in the pong
}

struct Pong {
  sentNanos @0 :UInt64;
  usedBytes @1 :UInt64;     # the element's current use of its capacity
}

struct ElementStatus {
  name @0 :Text;
  kind @1 :ElementKind;
  pid @2 :Int32;
  health @3 :Health;
  capacityBytes @4 :UInt64;
  usedBytes @5 :UInt64;
  lastHeartbeatAgeNanos @6 :Int64;  # -1: never heard
}

# One application process. The Rack MMU fills what it knows (id, name, pid, element, mapped
# bytes); a compute element fills what it knows (cache quota and use) for its processes.
struct ProcessStatus {
  processId @0 :UInt32;
  name @1 :Text;
  pid @2 :Int32;
  element @3 :Text;
  mappedBytes @4 :UInt64;       # memory it owns now
  cachedBytes @5 :UInt64;
  cacheQuotaBytes @6 :UInt64;
  dead @7 :Bool;                # it died: its memory is held for adoption (steal) until
  releaseInNanos @8 :Int64;     # ... this much later, then freed
  groups @9 :List(Text);        # trust groups it joined
  fenced @10 :Bool;             # declared failed while it may still run: cut off from memory
  writebacks @11 :UInt64;       # memory element: write-backs it accepted from the process
  refused @12 :UInt64;          # memory element: its requests refused (fenced, not mapped)
  app @13 :Text;                # the application it belongs to, and its fate model
  fate @14 :FateModel;
}

struct RackStatus {
  rackName @0 :Text;
  elements @1 :List(ElementStatus);
  processes @2 :List(ProcessStatus);
  gracePeriodNanos @3 :Int64;   # how long a dead process's memory is held for adoption
}

# The rack monitor tells the Rack MMU when an element's health changes.
struct HealthChange {
  name @0 :Text;
  health @1 :Health;
  reason @2 :Text;
}

# ---- Remote memory (proxied mode) ----
# Page numbers are rack virtual addresses >> 12 (4 KiB pages); pool pages are offsets >> 12
# into a memory element's pool.

# An application process joins the rack (to the Rack MMU).
struct Join {
  name @0 :Text;                # for logs and status; need not be unique
  element @1 :Text;             # the compute element it runs on ("" if none)
  app @2 :Text;                 # the application it belongs to ("" if none): its fate spec
}

struct Joined {
  processId @0 :UInt32;         # rack-wide id
  windowBase @1 :UInt64;        # this process's fixed window of the rack address space
  windowBytes @2 :UInt64;
  rangeBase @3 :UInt64;         # the whole rack range, reserved by every rack process
  rangeBytes @4 :UInt64;
}

enum Placement {
  spread @0;                    # stripe the region across the memory elements
  fill @1;                      # fill one element before using the next
}

struct MapRequest {
  bytes @0 :UInt64;
  placement @1 :Placement;
}

# A run of pages of one region living contiguously in one element's pool.
struct Extent {
  vpage @0 :UInt64;
  pages @1 :UInt64;
  element @2 :Text;             # memory element name: its socket is <run_dir>/<element>.sock
  poolPage @3 :UInt64;
}

struct Mapped {
  vaddr @0 :UInt64;
  bytes @1 :UInt64;
  extents @2 :List(Extent);
}

struct UnmapRequest {
  vaddr @0 :UInt64;             # the start of a region returned by Mapped
}

# The Rack MMU programs a memory element's page table (the only writer of it).
struct ProgramPages {
  processId @0 :UInt32;
  pid @1 :Int32;                # the process's pid and start time, as the kernel says:
  startTime @2 :UInt64;         # the memory element checks both on every connection
  vpage @3 :UInt64;
  pages @4 :UInt64;
  poolPage @5 :UInt64;
}

# Releases [vpage, +pages) of a process: the pages are unbound and freed (zeroed for the
# next owner). Answered ok once done.
struct RevokePages {
  processId @0 :UInt32;
  vpage @1 :UInt64;
  pages @2 :UInt64;
}

# Rebinds [vpage, +pages) from one process to another at the same virtual pages, keeping the
# data: from then on `fromProcess` is refused there and `toProcess` (identified by its pid and
# start time, as in ProgramPages) is served. The whole range must be bound to `fromProcess`;
# answered ok once done, or with an error and nothing changed.
struct MovePages {
  fromProcess @0 :UInt32;
  toProcess @1 :UInt32;
  toPid @2 :Int32;
  toStartTime @3 :UInt64;
  vpage @4 :UInt64;
  pages @5 :UInt64;
}

# A memory element's page table, as it stands when the request is served (for `rackctl check`).
struct PageTableEntry {
  processId @0 :UInt32;
  vpage @1 :UInt64;
  pages @2 :UInt64;
  poolPage @3 :UInt64;
}

struct PageTable {
  entries @0 :List(PageTableEntry);
}

# Application -> Rack MMU: move the caller's pages [vaddr, +bytes) to process `to` (grant), or
# `from`'s pages to the caller (steal, within a shared trust group). Grant is answered ok;
# steal with `mapped` (the range and its extents).
struct GrantRequest {
  vaddr @0 :UInt64;
  bytes @1 :UInt64;
  to @2 :UInt32;
}

struct StealRequest {
  vaddr @0 :UInt64;
  bytes @1 :UInt64;
  from @2 :UInt32;
}

struct JoinGroup {
  name @0 :Text;
}

# A named root: `name -> vaddr` of the publisher, kept by the Rack MMU (also for the grace
# period after the publisher's death), so whoever adopts its memory finds its state.
struct Publish {
  name @0 :Text;
  vaddr @1 :UInt64;
}

struct Lookup {
  owner @0 :UInt32;
  name @1 :Text;
}

struct Root {
  vaddr @0 :UInt64;
}

# What the Rack MMU tells an application process on its event link, unasked (seq 0).
enum EventKind {
  granted @0;   # `process` granted [vaddr, +bytes) to this process; extents say where it lives
  revoked @1;   # `process` stole [vaddr, +bytes) from this process
  memoryFailed @2;  # memory element `element` failed; `process`'s [vaddr, +bytes) on it is lost
                    # (`process` is this process, a group member, or one that named it a contact)
  peerFailed @3;    # process `process` (a member of a group of this process) failed: `reason`
  fenced @4;        # this process was declared failed (`reason`): it can no longer change rack
                    # memory, and its memory is held for adoption
}

struct RackEvent {
  kind @0 :EventKind;
  process @1 :UInt32;
  vaddr @2 :UInt64;
  bytes @3 :UInt64;
  extents @4 :List(Extent);
  element @5 :Text;             # memoryFailed: the memory element; peerFailed: the compute element
  reason @6 :Text;
}

# Rack MMU -> memory element: process `processId` (as the kernel identifies it: pid and start
# time) was declared failed. From now on the element refuses all its reads and write-backs
# (FAILED_PRECONDITION, "fenced"), whatever it may still send; its pages stay bound, for
# whoever adopts them. Answered ok once in force.
struct Fence {
  processId @0 :UInt32;
  pid @1 :Int32;
  startTime @2 :UInt64;
  reason @3 :Text;
  runHandler @4 :Bool;          # a failure of its own (its handler runs), not one it shares
}

# Compute element -> rack monitor: a process attached here (processUp), or is gone or declared
# failed (processDown). The monitor forwards failures to the Rack MMU (processFailed), which
# fences the process and tells its groups.
struct ProcessUp {
  processId @0 :UInt32;
  name @1 :Text;
  pid @2 :Int32;
  app @3 :Text;                 # its application, as it said when attaching
}

struct ProcessDown {
  processId @0 :UInt32;
  reason @1 :Text;
  clean @2 :Bool;               # it left the rack on its own: not a failure
  pid @3 :Int32;                # checked: the id may have been given to another process since
}

# rack monitor -> Rack MMU: declare process `processId` failed (on element `element`).
struct ProcessFailed {
  processId @0 :UInt32;
  pid @1 :Int32;                # checked: the id may have been given to another process since
  reason @2 :Text;
}

# Application -> its compute element: the processes to tell when this process fails or its
# memory does (replaces the earlier list). Kept by the compute element, so that it survives the
# failure of the memory the process used, and the death of the process itself.
struct EmergencyContacts {
  contacts @0 :List(UInt32);    # rack process ids, at most 64
}

# Compute element -> Rack MMU: deliver `event` (about process `event.process`, one of this
# element's) to the processes `to`, on their event links. Only memoryFailed and peerFailed.
struct Relay {
  to @0 :List(UInt32);
  event @1 :RackEvent;
  pid @2 :Int32;                # of `event.process`: checked, as ids are recycled
}

# rackctl -> rack monitor: a fast failure handler. When a process named `processName` fails,
# the monitor starts `launch`'s program (argv, env, cwd; its stdio goes to a log in the run
# directory) on compute element `element`, or on another healthy one if that one is not
# healthy or ran the failed process (`element` empty: any healthy one but the failed
# process's). The program finds DISAGG_FAILED_PROCESS (the failed process's rack id),
# DISAGG_FAILED_NAME and DISAGG_FAILED_REASON in its environment, to adopt its memory
# (Lookup, Steal). A handler registered again for the same name replaces the earlier one;
# an empty argv removes it. Answered ok.
struct FailureHandler {
  processName @0 :Text;
  element @1 :Text;
  launch @2 :Launch;
}

# Application -> its compute element, once after attaching: its life word (ipc/life_word.h),
# a memfd the compute element copies with pidfd_getfd, so that the process's death is seen
# before its memory is torn down.
struct LifeWord {
  fd @0 :Int32;                 # the fd's number in the application
}

# rackctl -> rack monitor: fault injection.
enum FaultAction {
  fail @0;                      # crash an element (SIGKILL of its daemon)
  kill @1;                      # SIGKILL an application process (by rack id or name)
  pause @2;                     # freeze an element (a compute element with its processes)
  resume @3;                    # thaw a paused element
  partition @4;                 # the channels between `target` and `peer` deliver nothing
  heal @5;                      # end the partition of `target` and `peer` (both empty: all)
  delay @6;                     # hold each message on `target`'s channels `delayNanos` (0: end)
}

struct Inject {
  action @0 :FaultAction;
  target @1 :Text;              # element name, or process id or name for kill
  forNanos @2 :Int64;           # pause, partition, delay: end by itself after this long (0: stay)
  peer @3 :Text;                # partition, heal: the other element
  delayNanos @4 :Int64;         # delay: per message, each way
}

# ---- Programmable fate sharing (rackmon/fate_spec.h has the models) ----
enum FateModel {
  none @0;
  complete @1;
  partial @2;
  tainted @3;
}

enum TaintStop {
  memory @0;                    # the tainted memory elements fail for the application
  users @1;                     # ... and so do its processes with memory on them
}

struct FateSpec {
  model @0 :FateModel;
  taintStop @1 :TaintStop;
  notifyGroups @2 :Bool;        # the failed process's trust groups hear of it (peerFailed)
  notifyApp @3 :Bool;           # every live process of its application does
}

# rackctl -> rack monitor: application `app`'s fate-sharing spec, the text of file `file`
# (named in errors). The monitor parses it, refusing a malformed one with its line number
# (INVALID_ARGUMENT "FILE:LINE: why"), hands the result to the Rack MMU, and answers ok once
# the Rack MMU holds it. `handler` is the spec's handler line as rackctl resolved it (the
# program's path, this environment and working directory); an empty argv if it has none.
# Registering an application again replaces its spec.
struct RegisterApp {
  app @0 :Text;
  file @1 :Text;
  text @2 :Text;
  handler @3 :Launch;
  handlerElement @4 :Text;
}

# rack monitor -> Rack MMU: application `app`'s fate spec, in force from now on. Answered ok.
struct AppFate {
  app @0 :Text;
  spec @1 :FateSpec;
}

# Rack MMU -> rack monitor: end process `processId` (SIGKILL, by pidfd): it failed, or it
# shares fate with a failure (`reason`). The Rack MMU has fenced it already.
struct EndProcess {
  processId @0 :UInt32;
  pid @1 :Int32;                # and start time: the process as the kernel identifies it
  startTime @2 :UInt64;
  reason @3 :Text;
  runHandler @4 :Bool;          # a failure of its own (its handler runs), not one it shares
}

# Application -> Rack MMU, on its event link, once: its write domain (ipc/write_domain.h), a
# memfd the Rack MMU copies with pidfd_getfd. It counts, per memory element, the batches of
# write-backs the process started and those it saw acknowledged; read when the process fails,
# for tainted fate sharing.
struct WriteDomain {
  fd @0 :Int32;                 # the fd's number in the application
}

# Application -> Rack MMU, on a second connection: make this the event link of process
# `processId` (the same process, as the kernel identifies it).
struct Subscribe {
  processId @0 :UInt32;
}

# rackctl -> Rack MMU: compare the MMU's map with every memory element's page table.
struct CheckResult {
  differences @0 :List(Text);   # empty: they agree
  extents @1 :UInt64;           # how many extents were compared
  elements @2 :UInt32;          # how many memory elements answered
}

# Application -> Rack MMU: where does this page live? Answered with `mapped` holding the
# region's bounds and the one extent that holds the page; NOT_FOUND if nothing is mapped
# there, PERMISSION_DENIED naming the owner if another process owns the page (or the page
# is being granted or stolen right now).
struct Translate {
  vpage @0 :UInt64;
}

# Application -> its compute element, once after joining: the element supervises it and
# leases it a share of the element's cache budget (sent as cacheQuota).
struct Attach {
  processId @0 :UInt32;
  name @1 :Text;
  app @2 :Text;
}

# Compute element -> application: the most local memory its page cache may hold now. A
# nonzero seq asks for a cacheUsage reply with that seq once the cache fits the new quota.
struct CacheQuota {
  bytes @0 :UInt64;
}

# Application -> compute element: what its cache holds (also sent unasked, now and then).
struct CacheUsage {
  cachedBytes @0 :UInt64;
}

# rackctl -> compute element: start a program on the element, as its child. The caller's
# standard fds are taken with pidfd_getfd (the caller lets the element do so with
# PR_SET_PTRACER). Answered with launched, then, when the program ends, with exited under the
# same seq.
struct Launch {
  argv @0 :List(Text);          # argv[0]: the program's path (relative to cwd if not absolute)
  env @1 :List(Text);           # NAME=value; the element adds DISAGG_RACK and DISAGG_ELEMENT
  cwd @2 :Text;
  stdio @3 :List(Int32);        # the caller's fds that become the program's 0, 1 and 2
}

struct Launched {
  pid @0 :UInt32;
}

struct Exited {
  pid @0 :UInt32;
  exitCode @1 :Int32;           # if it exited
  signal @2 :Int32;             # if a signal ended it (then exitCode is 0)
}

# rackctl -> compute element: deliver a signal to the program this connection launched.
struct SignalProgram {
  signal @0 :Int32;
}

# Application <-> memory element: one page at a time.
struct ReadPage {
  vpage @0 :UInt64;
}

struct PageData {
  vpage @0 :UInt64;
  data @1 :Data;                # exactly 4096 bytes
}

# Application <-> memory element: a run of pages through the channel's page slots
# (ipc/channel.h), without the data in any message. The element checks the run as it checks a
# ReadPage, copies the pages it may into the named slots and answers PagesRead, or an Error
# when it may read not even the first page.
struct ReadPages {
  vpage @0 :UInt64;             # the run's first page
  pages @1 :UInt32;             # 1 up to the channel's slots
  slot @2 :UInt32;              # page k lands in slot `slot + k`
}

struct PagesRead {
  pages @0 :UInt32;             # how many of the run, from its start, are in the slots (>= 1)
}

# Application -> memory element: a write-back of a run of pages the application put in the
# channel's page slots, checked as a PageData write-back is; answered ok, or an Error for the
# first page it may not write (the pages before it are written).
struct WritePages {
  vpage @0 :UInt64;             # the run's first page
  pages @1 :UInt32;             # 1 up to the channel's slots
  slot @2 :UInt32;              # page k is in slot `slot + k`
}

# Application -> memory element: up to 512 pages (a huge page's worth) written by the element
# straight into the application's own memory at `dst` (through /proc/<pid>/mem), where the
# application moves them into place. Checked as a ReadPages is; answered UnitPlaced, or an
# Error: for the first page as a ReadPages; INVALID_ARGUMENT for a malformed unit; ABORTED for
# a destination the element cannot write (not plain writable memory of the process);
# UNIMPLEMENTED when the element may not write into the process (the kernel's permission
# check), so that the application uses ReadPages instead.
struct PlaceUnit {
  vpage @0 :UInt64;             # the unit's first page
  pages @1 :UInt32;             # 1 to 512
  dst @2 :UInt64;               # page-aligned: page k lands at dst + 4096 k
}

struct UnitPlaced {
  pages @0 :UInt32;             # how many of the unit, from its start, were written (>= 1)
}

struct Message {
  seq @0 :UInt64;
  union {
    register @1 :Register;
    registered @2 :Registered;
    error @3 :Error;
    ping @4 :Ping;
    pong @5 :Pong;
    statusRequest @6 :Void;
    status @7 :RackStatus;
    healthChange @8 :HealthChange;
    ok @9 :Void;
    echo @10 :Data;          # benchmarks and liveness probes: answered with the same bytes
    join @11 :Join;
    joined @12 :Joined;
    map @13 :MapRequest;
    mapped @14 :Mapped;
    unmap @15 :UnmapRequest;
    programPages @16 :ProgramPages;
    revokePages @17 :RevokePages;
    readPage @18 :ReadPage;
    pageData @19 :PageData;   # reply to readPage; also a write-back request (answered ok)
    translate @20 :Translate;
    attach @21 :Attach;
    cacheQuota @22 :CacheQuota;
    cacheUsage @23 :CacheUsage;
    launch @24 :Launch;
    launched @25 :Launched;
    exited @26 :Exited;
    signalProgram @27 :SignalProgram;
    movePages @28 :MovePages;
    pageTableRequest @29 :Void;
    pageTable @30 :PageTable;
    grant @31 :GrantRequest;
    steal @32 :StealRequest;
    joinGroup @33 :JoinGroup;
    publish @34 :Publish;
    lookup @35 :Lookup;
    root @36 :Root;
    rackEvent @37 :RackEvent;
    subscribe @38 :Subscribe;
    leave @39 :Void;              # application -> Rack MMU: release everything now (clean exit)
    checkRequest @40 :Void;
    checkResult @41 :CheckResult;
    fence @42 :Fence;
    processUp @43 :ProcessUp;
    processDown @44 :ProcessDown;
    processFailed @45 :ProcessFailed;
    inject @46 :Inject;
    emergencyContacts @47 :EmergencyContacts;
    relay @48 :Relay;
    addFailureHandler @49 :FailureHandler;
    lifeWord @50 :LifeWord;
    registerApp @51 :RegisterApp;
    appFate @52 :AppFate;
    endProcess @53 :EndProcess;
    writeDomain @54 :WriteDomain;
    readPages @55 :ReadPages;
    pagesRead @56 :PagesRead;
    writePages @57 :WritePages;
    placeUnit @58 :PlaceUnit;
    unitPlaced @59 :UnitPlaced;
  }
}
