// Linux process-events connector (NETLINK_CONNECTOR / CN_IDX_PROC) reader.
//
// A native thread receives fork/exec/exit events and, for exec, reads
// /proc/<pid> immediately (short-lived processes are gone by the time JS could
// look). Events go to a bounded queue; JS gets them in batches through a
// ThreadSafeFunction (at most one call in flight, flushed every few ms),
// never one call per event.
//
// CPU: each /proc/<pid>/<file> opened for a new pid costs a proc inode and
// dentry, the bulk of the reader's time, so an exec reads only what its event
// needs. The container and the real uid are tracked from the event stream
// (inherited at fork, uid changed by PROC_EVENT_UID) and read from /proc only
// when the stream cannot tell; after any loss nothing tracked is trusted until
// read again. The next biggest cost was waking up for every fork, exec and
// exit, so execs come on a socket of their own and everything else on a
// second one that is drained whenever the reader is up anyway.
//
// Short-lived execs: a program like /usr/bin/true exits within a millisecond
// of its exec event. A reader woken on another CPU than the exec's loses that
// race whenever that CPU sleeps (in a VM, waking a halted vCPU took long
// enough to lose 0.5-15% of a storm's execs here). So one small thread per CPU,
// pinned there and SCHED_FIFO, gets that CPU's execs (a socket filter on the
// event's cpu) and reads their short-lived /proc entries at once: it wakes on
// the CPU the new program runs on and preempts it, so the program cannot exit
// before it is read. The reader thread then only keeps the books, in stream
// order, every few milliseconds.

#include <napi.h>
#include <uv.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/filter.h>
#include <linux/netlink.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

constexpr size_t kMaxArgs = 64;
constexpr size_t kMaxArgBytes = 4096;
constexpr unsigned kRecvBatch = 64;  // messages per receive round (bounds open dirfds too)
constexpr size_t kMsgBytes = 512;    // one proc connector datagram is under 100 bytes
constexpr size_t kHeldMax = 65536;   // non-exec messages waiting for their turn; beyond, left in the socket
constexpr int kAckTimeoutMs = 1500;
constexpr int kFifoPriority = 1;  // lowest RT priority already preempts every CFS task
constexpr uint32_t kMaxCpus = 8192;
constexpr size_t kMaxGaps = 64;         // open sequence gaps per CPU; beyond, the oldest counts as lost
constexpr double kGapGraceMs = 100;     // on top of twice the flush interval
constexpr int kCpuReaderRcvbuf = 1 << 20;  // a per-CPU exec socket; its overflow only means a late read
constexpr size_t kCpuReadsMax = 4096;      // execs one per-CPU thread has read for the reader (each holds a dirfd)
constexpr uint64_t kCpuReadStaleNs = 1000000000ull;  // not claimed by the reader within this: its message was lost
constexpr double kCpuReadWaitMs = 50;     // longest the reader waits for a per-CPU thread behind on its reads
constexpr int kCpuReaderPriority = kFifoPriority + 1;  // preempts the reader too: its reads race the process's exit

enum class EvType : uint8_t { Fork, Exec, Exit };

struct Event {
  EvType type;
  double ts = 0;
  int32_t pid = 0;   // fork: child tgid
  int32_t ppid = 0;  // fork: parent tgid; exec: PPid
  int64_t uid = -1;  // real uid; -1: unknown
  int64_t loginuid = -1;  // -1: not read
  int32_t tty = 0;
  int32_t exitCode = 0, signal = 0;
  bool exeDeleted = false, argsTruncated = false, stdioSocket = false;
  bool resolved = false, hasCwd = false;
  std::string exe, comm, cwd, containerId;
  std::vector<std::string> args;
};

// The batch handed to JS: kSlots numbers per event in one Float64Array, and
// the exec events' strings (exe, comm, cwd, containerId, then the args) in one
// array. Creating ~17 object properties per event through N-API cost more
// than the JS that handles the event; proc-connector.ts builds the objects.
enum Slot { kSlotType, kSlotTs, kSlotPid, kSlotPpid, kSlotUid, kSlotLoginuid, kSlotTty, kSlotExitCode, kSlotSignal,
            kSlotFlags, kSlotArgc, kSlots };
enum Flag { kFlagExeDeleted = 1, kFlagArgsTruncated = 2, kFlagStdioSocket = 4, kFlagResolved = 8, kFlagHasCwd = 16 };

// State shared by the reader thread, the ThreadSafeFunction callbacks and the
// JS object. Held by shared_ptr so queued TSFN calls stay valid even if the
// wrapper object is collected before they run.
struct Shared {
  size_t queueCap = 32768;
  size_t batchMax = 512;

  std::mutex mu;
  std::deque<Event> queue;
  bool notifyPending = false;
  bool closed = true;
  Napi::ThreadSafeFunction tsfn;

  std::atomic<uint64_t> received{0}, delivered{0}, queueDrops{0}, kernelLost{0}, enobufs{0},
      unresolved{0};
  std::atomic<uint64_t> rcvbufBytes{0};
  std::atomic<bool> schedFifo{false};
};

// ---------------------------------------------------------------- /proc helpers

// One read is the whole file: /proc files fill the buffer from their start
// and a short read means the end, so no second read() for the EOF.
ssize_t ReadAt(int dirfd, const char* name, char* buf, size_t cap) {
  int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n;
  do n = read(fd, buf, cap);
  while (n < 0 && errno == EINTR);
  close(fd);
  return n;
}

bool ReadLinkAt(int dirfd, const char* name, std::string& out) {
  char buf[PATH_MAX];
  ssize_t n = readlinkat(dirfd, name, buf, sizeof buf);
  if (n < 0) return false;
  out.assign(buf, static_cast<size_t>(n));
  return true;
}

bool IsHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// Finds a 64-hex container id in /proc/<pid>/cgroup content. Handles
// "/docker/<id>", "/system.slice/docker-<id>.scope" and the containerd/k8s
// variants alike. The first match wins: with nested engines ("/docker/<outer>/
// docker/<inner>") the outer id is the one the host's engine knows.
std::string ContainerIdFromCgroup(const char* s, size_t n) {
  size_t line = 0;
  while (line < n) {
    const char* nl = static_cast<const char*>(memchr(s + line, '\n', n - line));
    size_t end = nl ? static_cast<size_t>(nl - s) : n;
    const char* c1 = static_cast<const char*>(memchr(s + line, ':', end - line));
    const char* c2 = c1 ? static_cast<const char*>(memchr(c1 + 1, ':', s + end - c1 - 1)) : nullptr;
    if (c2) {
      size_t i = static_cast<size_t>(c2 - s) + 1;
      while (i < end) {
        if (!IsHex(s[i])) {
          ++i;
          continue;
        }
        size_t j = i;
        while (j < end && IsHex(s[j])) ++j;
        if (j - i == 64 && (s[i - 1] == '/' || s[i - 1] == '-') &&
            (j == end || s[j] == '/' || s[j] == '.'))
          return std::string(s + i, 64);
        i = j;
      }
    }
    line = end + 1;
  }
  return std::string();
}

bool ReadContainerId(int dirfd, std::string& out) {
  char buf[4096];
  ssize_t n = ReadAt(dirfd, "cgroup", buf, sizeof buf);
  if (n <= 0) return false;
  out = ContainerIdFromCgroup(buf, static_cast<size_t>(n));
  return true;
}

// The docker CLI, by its executable's or its task's name: a host exec whose
// command line JS needs (who ran `docker exec`, see DockerClientRuns).
bool IsDockerCli(const std::string& exe, const std::string& comm) {
  size_t slash = exe.rfind('/');
  const char* base = exe.c_str() + (slash == std::string::npos ? 0 : slash + 1);
  return strcmp(base, "docker") == 0 || strcmp(base, "docker.io") == 0 || comm == "docker";
}

int OpenProcDir(int pid) {
  char path[32];
  snprintf(path, sizeof path, "/proc/%d", pid);
  return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

uint64_t NowNs() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);  // the clock of the events' timestamp_ns
  return static_cast<uint64_t>(t.tv_sec) * 1000000000ull + static_cast<uint64_t>(t.tv_nsec);
}

double NowMs(clockid_t clk) {
  timespec t;
  clock_gettime(clk, &t);
  return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_nsec) / 1e6;
}

Napi::Error ErrnoError(Napi::Env env, int err, const std::string& what, const std::string& hint) {
  std::string msg = "proc connector: " + what + " failed: " + strerror(err);
  if (!hint.empty()) msg += " (" + hint + ")";
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, uv_err_name(-err)));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, what));
  return e;
}

// A proc connector message as received, before it is handled.
struct Msg {
  uint32_t seq = 0, ack = 0, len = 0;  // len: valid bytes of ev
  proc_event ev{};
};

// Socket filters on the message type (classic BPF loads it big-endian, hence
// htonl): execs and the subscription's acknowledgement on one socket, the rest
// on the other. Every message lands on exactly one, so per-CPU sequence
// numbers still reveal losses.
constexpr uint32_t kWhatOffset = NLMSG_HDRLEN + sizeof(cn_msg) + offsetof(proc_event, what);
sock_filter kExecFilter[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kWhatOffset),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, htonl(proc_event::PROC_EVENT_EXEC), 1, 0),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, htonl(proc_event::PROC_EVENT_NONE), 0, 1),
    BPF_STMT(BPF_RET | BPF_K, 0xffffffff),
    BPF_STMT(BPF_RET | BPF_K, 0),
};
sock_filter kRestFilter[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kWhatOffset),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, htonl(proc_event::PROC_EVENT_EXEC), 2, 0),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, htonl(proc_event::PROC_EVENT_NONE), 1, 0),
    BPF_STMT(BPF_RET | BPF_K, 0xffffffff),
    BPF_STMT(BPF_RET | BPF_K, 0),
};

// Execs that ran on one CPU: the per-CPU threads' sockets.
constexpr uint32_t kCpuOffset = NLMSG_HDRLEN + sizeof(cn_msg) + offsetof(proc_event, cpu);
std::vector<sock_filter> CpuExecFilter(uint32_t cpu) {
  return {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kWhatOffset),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, htonl(proc_event::PROC_EVENT_EXEC), 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kCpuOffset),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, htonl(cpu), 0, 1),
      BPF_STMT(BPF_RET | BPF_K, 0xffffffff),
      BPF_STMT(BPF_RET | BPF_K, 0),
  };
}

// ------------------------------------------------------------------ connector

class Connector : public Napi::ObjectWrap<Connector> {
 public:
  static Napi::Object Init(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor = DefineClass(env, "ProcConnector",
                                      {InstanceMethod("start", &Connector::Start),
                                       InstanceMethod("stop", &Connector::Stop),
                                       InstanceMethod("stats", &Connector::Stats)});
    exports.Set("ProcConnector", ctor);
    return exports;
  }

  explicit Connector(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Connector>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction())
      throw Napi::TypeError::New(env, "ProcConnector(options: object, onEvents: function)");
    Napi::Object o = info[0].As<Napi::Object>();
    sh_ = std::make_shared<Shared>();
    auto num = [&](const char* k, double def, double lo, double hi) {
      Napi::Value v = o.Get(k);
      if (v.IsUndefined()) return def;
      double d = v.ToNumber().DoubleValue();
      if (!(d >= lo && d <= hi)) throw Napi::RangeError::New(env, std::string("invalid option ") + k);
      return d;
    };
    rcvbufReq_ = static_cast<int>(num("rcvbufBytes", 16.0 * 1024 * 1024, 65536, 1024.0 * 1024 * 1024));
    sh_->queueCap = static_cast<size_t>(num("queueCapacity", 32768, 1, 1 << 24));
    sh_->batchMax = static_cast<size_t>(num("batchMax", 512, 1, 1 << 20));
    flushMs_ = num("flushIntervalMs", 30, 0, 1000);
    Napi::Value rt = o.Get("realtime");
    realtime_ = rt.IsUndefined() ? true : rt.ToBoolean().Value();
    Napi::Value pc = o.Get("perCpuReaders");
    perCpuReaders_ = pc.IsUndefined() ? true : pc.ToBoolean().Value();
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
  }

  ~Connector() override {
    if (running_) Shutdown();
    if (hookRegistered_) napi_remove_env_cleanup_hook(Env(), &Connector::CleanupHook, this);
  }

 private:
  // What the event stream tells of a live process. The facts hold for the
  // loss epoch they were learnt in: a lost fork or exit could mean the pid now
  // belongs to someone else, and a lost uid event that the uid changed.
  struct ProcEntry {
    uint64_t gen = 0;    // this process, as opposed to an earlier or later one with its pid
    uint32_t epoch = 0;  // loss epoch of uid, cgTrusted and cgRead
    int32_t ppid = 0;
    int64_t uid = -1;         // real uid: inherited at fork, set by uid events; -1 unknown
    bool cgKnown = false;     // containerId is known, if only from an earlier epoch (a fallback)
    bool cgTrusted = false;   // read from this process, or from its parent when it forked this epoch
    bool cgRead = false;      // read from this process itself
    std::string containerId;
  };
  struct Pending {
    Event e;
    int dfd = -1;
    uint64_t tsNs = 0;
    uint64_t gen = 0;  // the ProcEntry the exec belongs to
    // What the stream knew at the exec, for whatever /proc can no longer tell.
    int32_t knownPpid = 0;
    int64_t knownUid = -1;
    bool knownCg = false;
    std::string knownId;
    bool cgOk = false;  // cgId was read from the process
    std::string cgId;
    bool cmdlineRead = false;
    int statRead = 0;  // 1: read and this process's, -1: unreadable or a reused pid's
    uint64_t argStart = 0, argEnd = 0;  // where argv lies in the process's memory, from stat
    uint32_t cpu = 0;                   // where the exec ran
    bool uidRead = false;               // a per-CPU thread read readUid, the stream not knowing it then
    int64_t readUid = -1;
  };
  // What a per-CPU thread may know of a parent, so as not to read it again.
  struct SharedFacts {
    bool inContainer = false;  // its cgroup, read from itself, is a container's
    bool uidKnown = false;     // the stream knows its real uid, hence its children's
  };
  using CpuReadKey = std::pair<uint64_t, int32_t>;  // event timestamp_ns, pid
  // A per-CPU exec reader. It never waits for a lock before its reads: a
  // thread that sleeps gives the CPU back to the program it should preempt.
  struct CpuExecReader {
    int cpu = -1;
    int sock = -1;
    std::thread thread;
    std::mutex mu;
    std::vector<Pending> out;         // read, for the reader to take (under mu)
    std::atomic<uint64_t> doneNs{0};  // its CPU's execs stamped up to this were read or passed by
  };
  // Sequence numbers missing from one CPU's messages: lost, or still in the
  // other socket. Counted as lost once overdue.
  struct Gap {
    uint32_t from, to;  // [from, to)
    double dueMs;
  };
  struct SeqState {
    bool init = false;
    uint32_t next = 0;
    std::vector<Gap> gaps;
  };

  // ------------------------------------------------------------- JS methods

  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (running_) throw Napi::Error::New(env, "proc connector: already started");

    const char* what = "";
    sock_fprog execProg{static_cast<unsigned short>(std::size(kExecFilter)), kExecFilter};
    sock_fprog restProg{static_cast<unsigned short>(std::size(kRestFilter)), kRestFilter};
    int execSock = OpenSocket(execProg, what);
    int restSock = execSock < 0 ? -1 : OpenSocket(restProg, what);
    if (restSock < 0) {
      int err = errno;
      if (execSock >= 0) close(execSock);
      const char* hint = err == EPROTONOSUPPORT ? "kernel lacks CONFIG_CONNECTOR"
                         : err == EPERM         ? "joining the proc connector group needs CAP_NET_ADMIN"
                                                : "";
      throw ErrnoError(env, err, what, hint);
    }
    auto fail = [&](int err, const char* call, const std::string& hint) {
      close(execSock);
      close(restSock);
      return ErrnoError(env, err, call, hint);
    };
    int granted = 0;
    socklen_t gl = sizeof granted;
    getsockopt(execSock, SOL_SOCKET, SO_RCVBUF, &granted, &gl);
    sh_->rcvbufBytes = static_cast<uint64_t>(granted);

    // One subscription makes the kernel send; both sockets are in the group.
    std::random_device rd;
    listenAck_ = rd() & 0x7fffffff;
    if (!SendOp(execSock, PROC_CN_MCAST_LISTEN, rd(), listenAck_)) {
      int err = errno;
      throw fail(err, "sendmsg",
                 err == ECONNREFUSED ? "the proc connector exists only in the host network namespace (--network host)"
                                     : "");
    }

    int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake < 0) {
      int err = errno;
      SendOp(execSock, PROC_CN_MCAST_IGNORE, 0, 0);
      throw fail(err, "eventfd", "");
    }

    execSock_ = execSock;
    restSock_ = restSock;
    wakeFd_ = wake;
    if (perCpuReaders_) OpenCpuReaders();
    stopReq_ = false;
    sh_->schedFifo = false;
    ackSeen_ = false;
    ackErr_ = 0;
    seqs_.clear();
    procs_.clear();
    held_.clear();
    pendingGaps_ = 0;
    unnotified_ = 0;
    {
      std::lock_guard<std::mutex> lk(sh_->mu);
      sh_->queue.clear();
      sh_->notifyPending = false;
      sh_->closed = false;
    }
    sh_->tsfn = Napi::ThreadSafeFunction::New(env, callback_.Value(), "proc_connector", 0, 1);
    running_ = true;
    thread_ = std::thread(&Connector::Run, this);
    for (auto& c : cpuReaders_) c->thread = std::thread(&Connector::ReadCpuExecs, this, c.get());

    bool seen;
    uint32_t ackErr;
    {
      std::unique_lock<std::mutex> lk(ackMu_);
      seen = ackCv_.wait_for(lk, std::chrono::milliseconds(kAckTimeoutMs), [this] { return ackSeen_; });
      ackErr = ackErr_;
    }
    if (!seen || ackErr != 0) {
      Shutdown();
      if (!seen)
        throw ErrnoError(env, ETIMEDOUT, "subscribe",
                         "no acknowledgement from the kernel: the proc connector ignores subscribers outside the "
                         "initial pid/user namespace (--pid host), or the kernel lacks CONFIG_PROC_EVENTS");
      throw ErrnoError(env, static_cast<int>(ackErr), "subscribe",
                       ackErr == EPERM ? "needs CAP_NET_ADMIN in the initial user namespace" : "");
    }

    Ref();  // the wrapper must outlive the run even if JS drops it
    napi_add_env_cleanup_hook(env, &Connector::CleanupHook, this);
    hookRegistered_ = true;
    return env.Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (running_) {
      Shutdown();
      if (hookRegistered_) {
        napi_remove_env_cleanup_hook(info.Env(), &Connector::CleanupHook, this);
        hookRegistered_ = false;
      }
      Unref();
    }
    return info.Env().Undefined();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    auto n = [&](const char* k, const std::atomic<uint64_t>& v) {
      o.Set(k, Napi::Number::New(env, static_cast<double>(v.load(std::memory_order_relaxed))));
    };
    n("received", sh_->received);
    n("delivered", sh_->delivered);
    n("queueDrops", sh_->queueDrops);
    n("kernelLost", sh_->kernelLost);
    n("enobufs", sh_->enobufs);
    n("rcvbufBytes", sh_->rcvbufBytes);
    o.Set("schedFifo", Napi::Boolean::New(env, sh_->schedFifo.load()));
    o.Set("perCpuReaders", Napi::Number::New(env, static_cast<double>(cpuReaders_.size())));
    n("unresolved", sh_->unresolved);
    {
      std::lock_guard<std::mutex> lk(sh_->mu);
      o.Set("queued", Napi::Number::New(env, static_cast<double>(sh_->queue.size())));
    }
    return o;
  }

  static void CleanupHook(void* arg) {
    auto* self = static_cast<Connector*>(arg);
    self->hookRegistered_ = false;
    if (self->running_) self->Shutdown();
  }

  // Idempotent teardown, JS thread only.
  void Shutdown() {
    if (!running_) return;
    running_ = false;
    SendOp(execSock_, PROC_CN_MCAST_IGNORE, 0, 0);
    stopReq_ = true;
    uint64_t one = 1;
    ssize_t w = write(wakeFd_, &one, sizeof one);
    (void)w;
    if (thread_.joinable()) thread_.join();
    for (auto& c : cpuReaders_) {
      if (c->thread.joinable()) c->thread.join();
      close(c->sock);
      for (Pending& p : c->out)
        if (p.dfd >= 0) close(p.dfd);
    }
    cpuReaders_.clear();
    cpuReaderOf_.clear();
    lazyExecs_ = false;
    for (auto& kv : cpuReads_)
      if (kv.second.dfd >= 0) close(kv.second.dfd);
    cpuReads_.clear();
    sharedFacts_.clear();
    close(execSock_);
    close(restSock_);
    close(wakeFd_);
    execSock_ = restSock_ = wakeFd_ = -1;
    {
      std::lock_guard<std::mutex> lk(sh_->mu);
      sh_->closed = true;
      sh_->queue.clear();  // stop() discards what JS has not received yet
      sh_->notifyPending = false;
    }
    sh_->tsfn.Release();
  }

  // Returns the socket, or -1 with errno set and what naming the failed call.
  // The filter is attached before bind so that nothing unfiltered is queued.
  int OpenSocket(const sock_fprog& filter, const char*& what, int rcvbuf = 0) {
    if (rcvbuf == 0) rcvbuf = rcvbufReq_;
    int sock = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_CONNECTOR);
    if (sock < 0) {
      what = "socket";
      return -1;
    }
    // FORCE bypasses net.core.rmem_max (needs CAP_NET_ADMIN, which we need anyway).
    if (setsockopt(sock, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) != 0)
      setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_nl addr{};
    addr.nl_family = AF_NETLINK;
    addr.nl_groups = CN_IDX_PROC;
    if (setsockopt(sock, SOL_SOCKET, SO_ATTACH_FILTER, &filter, sizeof filter) != 0) what = "setsockopt";
    else if (bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) what = "bind";
    else return sock;
    int err = errno;
    close(sock);
    errno = err;
    return -1;
  }

  static bool SendOp(int sock, proc_cn_mcast_op op, uint32_t seq, uint32_t ack) {
    // Debian's uapi header has no struct proc_input; the kernel accepts the
    // bare 4-byte op and then subscribes to all event types.
    alignas(nlmsghdr) char buf[NLMSG_SPACE(sizeof(cn_msg) + sizeof(uint32_t))] = {};
    auto* nl = reinterpret_cast<nlmsghdr*>(buf);
    nl->nlmsg_len = NLMSG_LENGTH(sizeof(cn_msg) + sizeof(uint32_t));
    nl->nlmsg_type = NLMSG_DONE;
    auto* cn = static_cast<cn_msg*>(NLMSG_DATA(nl));
    cn->id.idx = CN_IDX_PROC;
    cn->id.val = CN_VAL_PROC;
    cn->seq = seq;
    cn->ack = ack;
    cn->len = sizeof(uint32_t);
    uint32_t op32 = op;
    memcpy(cn->data, &op32, sizeof op32);
    sockaddr_nl to{};
    to.nl_family = AF_NETLINK;
    for (;;) {
      ssize_t r = sendto(sock, buf, nl->nlmsg_len, 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
      if (r >= 0) return true;
      if (errno != EINTR) return false;
    }
  }

  // One exec socket per CPU this process may run on. The reader leaves the
  // execs to them (and wakes only every few ms) when every online CPU has one;
  // otherwise it reads the others' as before.
  void OpenCpuReaders() {
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    bool all = online > 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && cpu < static_cast<int>(kMaxCpus); ++cpu) {
      if (!CPU_ISSET(cpu, &allowed)) continue;
      std::vector<sock_filter> f = CpuExecFilter(static_cast<uint32_t>(cpu));
      sock_fprog prog{static_cast<unsigned short>(f.size()), f.data()};
      const char* what = "";
      int sock = OpenSocket(prog, what, kCpuReaderRcvbuf);
      if (sock < 0) {
        all = false;
        continue;
      }
      auto c = std::make_unique<CpuExecReader>();
      c->cpu = cpu;
      c->sock = sock;
      if (cpuReaderOf_.size() <= static_cast<size_t>(cpu)) cpuReaderOf_.resize(cpu + 1);
      cpuReaderOf_[cpu] = c.get();
      cpuReaders_.push_back(std::move(c));
    }
    lazyExecs_ = all && static_cast<long>(cpuReaders_.size()) >= online;
  }

  // A per-CPU thread: reads the short-lived /proc entries of the execs that
  // ran on its CPU, for the reader to claim in stream order.
  void ReadCpuExecs(CpuExecReader* c) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(c->cpu, &one);
    pthread_setaffinity_np(pthread_self(), sizeof one, &one);
    if (realtime_) {
      sched_param sp{};
      sp.sched_priority = kCpuReaderPriority;
      pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
    }
    char name[16];
    snprintf(name, sizeof name, "rw-exec/%d", c->cpu);
    pthread_setname_np(pthread_self(), name);
    std::vector<char> bufs(kRecvBatch * kMsgBytes);
    std::vector<Msg> msgs;
    std::vector<Pending> reads;
    pollfd fds[2] = {{c->sock, POLLIN, 0}, {wakeFd_, POLLIN, 0}};
    while (!stopReq_.load(std::memory_order_relaxed)) {
      int pr = poll(fds, 2, -1);
      if (pr < 0) {
        if (errno == EINTR) continue;
        break;
      }
      if (fds[1].revents) break;
      msgs.clear();
      Receive(c->sock, bufs.data(), kRecvBatch, msgs, false);
      reads.clear();
      uint64_t lastNs = 0;
      for (const Msg& m : msgs) {
        lastNs = std::max<uint64_t>(lastNs, m.ev.timestamp_ns);
        constexpr size_t hdr = offsetof(proc_event, event_data);
        if (m.ev.what != proc_event::PROC_EVENT_EXEC || m.len < hdr + sizeof(m.ev.event_data.exec)) continue;
        Pending& p = reads.emplace_back();
        p.e.pid = m.ev.event_data.exec.process_tgid;
        p.tsNs = m.ev.timestamp_ns;
      }
      for (Pending& p : reads) {
        p.dfd = OpenProcDir(p.e.pid);
        SharedFacts parent;
        if (p.dfd >= 0 && ReadStat(p)) {
          // Busy (the reader is updating it): read what it would have told instead of waiting.
          std::unique_lock<std::mutex> lk(sharedMu_, std::try_to_lock);
          if (lk.owns_lock()) {
            auto it = sharedFacts_.find(p.e.ppid);
            if (it != sharedFacts_.end()) parent = it->second;
          }
        }
        ReadShortLived(p, parent.inContainer, false);
        // The reader reads status later only when the stream cannot tell the uid; by then this one may be gone.
        if (!parent.uidKnown && p.dfd >= 0 && p.statRead > 0) {
          p.readUid = ReadUid(p.dfd);
          p.uidRead = true;
        }
      }
      {
        std::lock_guard<std::mutex> lk(c->mu);
        for (Pending& p : reads) {
          if (c->out.size() < kCpuReadsMax) c->out.push_back(std::move(p));
          else if (p.dfd >= 0) close(p.dfd);  // the reader reads it itself, later
        }
      }
      if (lastNs) c->doneNs.store(lastNs, std::memory_order_release);
    }
  }

  // ---------------------------------------------------------- reader thread

  void Run() {
    if (realtime_) {
      sched_param sp{};
      sp.sched_priority = kFifoPriority;
      sh_->schedFifo = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0;
    }
    pthread_setname_np(pthread_self(), "rw-proc");
    std::vector<char> bufs(kRecvBatch * kMsgBytes);
    pollfd fds[3] = {{execSock_, POLLIN, 0}, {wakeFd_, POLLIN, 0}, {restSock_, POLLIN, 0}};
    bool more = false;        // the last round left execs queued
    bool restArmed = true;    // wake for the rest socket (idle), or drain it by restDueMs
    double restDueMs = 0;
    // With per-CPU threads reading every exec, the exec socket is kept like
    // the rest one, and both are drained twice per flush interval.
    double drainMs = lazyExecs_ ? flushMs_ / 2 : flushMs_;
    while (!stopReq_.load(std::memory_order_relaxed)) {
      double now = NowMs(CLOCK_MONOTONIC);
      if (!more) {
        // Events are handed to JS at most every flushMs_ (or per full batch):
        // one JS call per event would cost more than reading /proc.
        double due = INFINITY;
        if (unnotified_ > 0) due = firstUnnotifiedMs_ + flushMs_;
        if (!restArmed) due = std::min(due, restDueMs);
        if (pendingGaps_ > 0) due = std::min(due, nextGapDueMs_);
        int timeout = due == INFINITY ? -1 : due <= now ? 0 : static_cast<int>(due - now) + 1;
        fds[0].fd = !lazyExecs_ || restArmed ? execSock_ : -1;
        fds[2].fd = restArmed ? restSock_ : -1;
        fds[0].revents = fds[2].revents = 0;
        int pr = poll(fds, 3, timeout);
        if (pr < 0) {
          if (errno == EINTR) continue;
          break;
        }
        if (fds[1].revents) break;
        now = NowMs(CLOCK_MONOTONIC);
      }
      bool restDue = !restArmed && now >= restDueMs;
      if (more || fds[0].revents || fds[2].revents || restDue || (pendingGaps_ > 0 && now >= nextGapDueMs_)) {
        bool restHad = false;
        size_t execs = 0;
        more = ReadRound(bufs.data(), restHad, execs);
        // A fork or an exit never needs the reader at once: once the rest
        // socket has had something, it is next drained within drainMs (or
        // with the next exec), and only an idle reader waits on it.
        bool had = restHad || (lazyExecs_ && execs > 0);
        restArmed = !had;
        if (had) restDueMs = NowMs(CLOCK_MONOTONIC) + drainMs;
      }
      if (unnotified_ > 0 && (urgent_ || unnotified_ >= sh_->batchMax ||
                              NowMs(CLOCK_MONOTONIC) - firstUnnotifiedMs_ >= flushMs_)) {
        unnotified_ = 0;
        urgent_ = false;
        Notify();
      }
    }
  }

  // Receives what the exec socket has (up to kRecvBatch, which bounds the
  // open dirfds), then all the rest socket has, and handles both merged in
  // time order. The rest socket's messages stamped after the exec socket was
  // read wait for the next round: an exit must not overtake its own exec still
  // queued there. The execs then complete in a second pass: in a burst every
  // exec gets its short-lived /proc entries read before any spends time on
  // the ones that survive until the zombie is reaped. Returns whether execs
  // are left queued; restHad tells whether the rest socket had anything.
  bool ReadRound(char* bufs, bool& restHad, size_t& execs) {
    std::vector<Msg>& round = msgs_;
    round.clear();
    size_t got = Receive(execSock_, bufs, kRecvBatch, round);
    execs = got;
    bool execsLeft = got == kRecvBatch;
    uint64_t cutNs = execsLeft && !round.empty() ? round.back().ev.timestamp_ns : NowNs();
    size_t nExec = round.size();
    while (held_.size() < kHeldMax && Receive(restSock_, bufs, kRecvBatch, held_) == kRecvBatch) continue;
    restHad = !held_.empty();
    size_t keep = 0;
    for (size_t i = 0; i < held_.size(); ++i) {
      if (held_[i].ev.timestamp_ns <= cutNs) round.push_back(held_[i]);
      else held_[keep++] = held_[i];
    }
    held_.resize(keep);
    if (round.size() > nExec) {
      std::stable_sort(round.begin(), round.end(),
                       [](const Msg& a, const Msg& b) { return a.ev.timestamp_ns < b.ev.timestamp_ns; });
    }
    clockOffsetMs_ = NowMs(CLOCK_REALTIME) - NowMs(CLOCK_MONOTONIC);
    roundMs_ = NowMs(CLOCK_MONOTONIC);
    for (const Msg& m : round) HandleMessage(m);
    for (Pending& p : round_) {
      if (p.e.type == EvType::Exec) ReadExecStable(p);
      Push(std::move(p.e));
    }
    round_.clear();
    SweepCpuReads();
    if (pendingGaps_ > 0 && roundMs_ >= nextGapDueMs_) ConfirmGaps();
    return execsLeft;
  }

  // Appends up to max messages from sock; returns how many datagrams it read.
  // A per-CPU thread's socket is not primary: its overflow loses nothing of
  // the stream, only the early read.
  size_t Receive(int sock, char* bufs, unsigned max, std::vector<Msg>& out, bool primary = true) {
    mmsghdr msgs[kRecvBatch];
    iovec iov[kRecvBatch];
    sockaddr_nl from[kRecvBatch];
    for (unsigned i = 0; i < max; ++i) {
      iov[i] = {bufs + i * kMsgBytes, kMsgBytes};
      msgs[i] = {};
      msgs[i].msg_hdr.msg_name = &from[i];
      msgs[i].msg_hdr.msg_namelen = sizeof from[i];
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int n;
    for (;;) {
      n = recvmmsg(sock, msgs, max, MSG_DONTWAIT, nullptr);
      if (n >= 0) break;
      if (errno == EINTR) continue;
      // One ENOBUFS per overflow episode; the lost count comes from seq gaps.
      if (errno == ENOBUFS) {
        if (primary) {
          sh_->enobufs++;
          BumpLossEpoch();
        }
        continue;
      }
      return 0;
    }
    for (int i = 0; i < n; ++i) {
      if (from[i].nl_pid != 0) continue;  // only the kernel may speak here
      int len = static_cast<int>(msgs[i].msg_len);
      for (auto* nh = reinterpret_cast<nlmsghdr*>(iov[i].iov_base); NLMSG_OK(nh, len); nh = NLMSG_NEXT(nh, len)) {
        if (nh->nlmsg_type == NLMSG_ERROR || nh->nlmsg_type == NLMSG_NOOP) continue;
        if (nh->nlmsg_len < NLMSG_LENGTH(sizeof(cn_msg))) continue;
        const auto* cn = static_cast<const cn_msg*>(NLMSG_DATA(nh));
        if (cn->id.idx != CN_IDX_PROC || cn->id.val != CN_VAL_PROC) continue;
        if (NLMSG_LENGTH(sizeof(cn_msg) + cn->len) > nh->nlmsg_len) continue;
        Msg& m = out.emplace_back();
        m.seq = cn->seq;
        m.ack = cn->ack;
        m.len = std::min<uint32_t>(cn->len, sizeof m.ev);
        memcpy(&m.ev, cn->data, m.len);
      }
    }
    return static_cast<size_t>(n);
  }

  void HandleMessage(const Msg& m) {
    constexpr size_t hdr = offsetof(proc_event, event_data);
    if (m.len < hdr + sizeof(uint32_t)) return;
    const proc_event& ev = m.ev;

    if (ev.what == proc_event::PROC_EVENT_NONE) {
      // Older kernels echo our seq with cpu = -1; newer ones (6.18 here) give
      // the ack a per-CPU number like any event, so it counts for gap
      // tracking. Either way only the ack field identifies our request.
      if (ev.cpu != UINT32_MAX) TrackSeq(ev.cpu, m.seq);
      if (m.ack == listenAck_ + 1) {
        std::lock_guard<std::mutex> lk(ackMu_);
        ackSeen_ = true;
        ackErr_ = ev.event_data.ack.err;
        ackCv_.notify_all();
      }
      return;
    }
    // Every event type consumes a per-CPU sequence number, so track all of them.
    TrackSeq(ev.cpu, m.seq);
    double ts = static_cast<double>(ev.timestamp_ns) / 1e6 + clockOffsetMs_;

    switch (ev.what) {
      case proc_event::PROC_EVENT_FORK: {
        if (m.len < hdr + sizeof(ev.event_data.fork)) return;
        const auto& f = ev.event_data.fork;
        if (f.child_pid != f.child_tgid) return;  // thread
        OnFork(f.parent_tgid, f.child_tgid);
        Event& e = NewPending(EvType::Fork, ts).e;
        e.ppid = f.parent_tgid;
        e.pid = f.child_tgid;
        return;
      }
      case proc_event::PROC_EVENT_EXEC: {
        if (m.len < hdr + sizeof(ev.event_data.exec)) return;
        Pending& p = NewPending(EvType::Exec, ts);
        p.e.pid = ev.event_data.exec.process_tgid;
        p.tsNs = ev.timestamp_ns;
        p.cpu = ev.cpu;
        ReadExecVolatile(p);
        return;
      }
      case proc_event::PROC_EVENT_UID: {
        if (m.len < hdr + sizeof(ev.event_data.id)) return;
        const auto& id = ev.event_data.id;
        auto it = procs_.find(id.process_tgid);
        if (it == procs_.end()) return;  // not tracked: its children's uid is read at their exec
        ProcEntry& pe = Current(it->second);
        // /proc/<pid>/status shows the main thread's; a thread that changed
        // alone (a raw setuid syscall) makes it unknown rather than wrong.
        if (id.process_pid == id.process_tgid) pe.uid = id.r.ruid;
        else if (pe.uid != static_cast<int64_t>(id.r.ruid)) pe.uid = -1;
        if (!cpuReaders_.empty()) Share(id.process_tgid, pe);
        return;
      }
      case proc_event::PROC_EVENT_EXIT: {
        if (m.len < hdr + 4 * sizeof(uint32_t)) return;
        const auto& x = ev.event_data.exit;
        if (x.process_pid != x.process_tgid) return;  // thread
        // In stream order: a fork later in this round may already reuse the pid.
        procs_.erase(x.process_tgid);
        if (!cpuReaders_.empty()) {
          std::lock_guard<std::mutex> lk(sharedMu_);
          sharedFacts_.erase(x.process_tgid);
        }
        Event& e = NewPending(EvType::Exit, ts).e;
        e.pid = x.process_tgid;
        // exit_code is a wait(2) status.
        uint32_t st = x.exit_code;
        if ((st & 0x7f) == 0) {
          e.exitCode = static_cast<int32_t>((st >> 8) & 0xff);
        } else {
          e.signal = static_cast<int32_t>(st & 0x7f);
          e.exitCode = 128 + e.signal;
        }
        return;
      }
      default:
        return;
    }
  }

  // A gap in a CPU's sequence numbers is a loss only once it stays open past
  // its due time: messages of the other socket (or, on older kernels, of one
  // CPU) can arrive after later ones. Kernel-side losses come with ENOBUFS,
  // which distrusts the tracked facts at once.
  void TrackSeq(uint32_t cpu, uint32_t seq) {
    if (cpu >= kMaxCpus) return;
    if (cpu >= seqs_.size()) seqs_.resize(cpu + 1);
    SeqState& s = seqs_[cpu];
    if (!s.init) {
      s.init = true;
      s.next = seq + 1;
      return;
    }
    auto d = static_cast<int32_t>(seq - s.next);
    if (d >= 0) {
      if (d > 0) {
        if (s.gaps.size() >= kMaxGaps) Confirm(s.gaps.front(), s, 0);
        double due = roundMs_ + 2 * flushMs_ + kGapGraceMs;
        s.gaps.push_back({s.next, seq, due});
        if (pendingGaps_++ == 0 || due < nextGapDueMs_) nextGapDueMs_ = due;
      }
      s.next = seq + 1;
      return;
    }
    for (size_t i = 0; i < s.gaps.size(); ++i) {
      Gap& g = s.gaps[i];
      if (seq - g.from >= g.to - g.from) continue;
      if (seq == g.from) g.from++;
      else if (seq == g.to - 1) g.to--;
      else {
        Gap tail{seq + 1, g.to, g.dueMs};
        g.to = seq;
        s.gaps.insert(s.gaps.begin() + static_cast<std::ptrdiff_t>(i) + 1, tail);
        pendingGaps_++;
        return;
      }
      if (g.from == g.to) {
        s.gaps.erase(s.gaps.begin() + static_cast<std::ptrdiff_t>(i));
        pendingGaps_--;
      }
      return;
    }
  }

  void ConfirmGaps() {
    nextGapDueMs_ = INFINITY;
    for (SeqState& s : seqs_) {
      for (size_t i = 0; i < s.gaps.size();) {
        if (s.gaps[i].dueMs <= roundMs_) {
          Confirm(s.gaps[i], s, i);
        } else {
          nextGapDueMs_ = std::min(nextGapDueMs_, s.gaps[i].dueMs);
          ++i;
        }
      }
    }
  }

  // Counts gap i of s as lost and removes it.
  void Confirm(const Gap& g, SeqState& s, size_t i) {
    sh_->kernelLost += g.to - g.from;
    BumpLossEpoch();
    s.gaps.erase(s.gaps.begin() + static_cast<std::ptrdiff_t>(i));
    pendingGaps_--;
  }

  // After a loss nothing tracked is trusted, the per-CPU threads' view included.
  void BumpLossEpoch() {
    lossEpoch_++;
    std::lock_guard<std::mutex> lk(sharedMu_);
    sharedFacts_.clear();
  }

  // Tells the per-CPU threads what the stream knows of a process.
  void Share(int32_t pid, const ProcEntry& pe) {
    SharedFacts f{pe.cgRead && !pe.containerId.empty(), pe.uid >= 0};
    std::lock_guard<std::mutex> lk(sharedMu_);
    if (f.inContainer || f.uidKnown) sharedFacts_[pid] = f;
    else sharedFacts_.erase(pid);
  }

  // The entry for pid, created (as a process the stream has not told of) when
  // missing, and stripped of what it knew before a loss.
  ProcEntry& Entry(int32_t pid) {
    auto r = procs_.try_emplace(pid);
    if (r.second) {
      r.first->second.gen = ++gen_;
      r.first->second.epoch = lossEpoch_;
    }
    return Current(r.first->second);
  }

  ProcEntry& Current(ProcEntry& pe) {
    if (pe.epoch != lossEpoch_) {
      pe.epoch = lossEpoch_;
      pe.uid = -1;
      pe.cgTrusted = pe.cgRead = false;
    }
    return pe;
  }

  void OnFork(int32_t parent, int32_t child) {
    ProcEntry& pe = Entry(parent);
    if (!pe.cgRead) {
      // What the parent inherited may be stale (runc init joins the container
      // after its own fork), so read it once while it is surely alive.
      int dfd = OpenProcDir(parent);
      if (dfd >= 0) {
        std::string id;
        if (ReadContainerId(dfd, id)) {
          pe.cgKnown = pe.cgTrusted = pe.cgRead = true;
          pe.containerId = std::move(id);
          if (!cpuReaders_.empty()) Share(parent, pe);
        }
        close(dfd);
      }
    }
    ProcEntry ce;
    ce.gen = ++gen_;
    ce.epoch = lossEpoch_;
    ce.ppid = parent;
    ce.uid = pe.uid;
    ce.cgKnown = pe.cgKnown;
    ce.cgTrusted = pe.cgRead;
    ce.containerId = pe.containerId;
    if (!cpuReaders_.empty()) Share(child, ce);
    procs_[child] = std::move(ce);  // pid reuse: overwrite
  }

  Pending& NewPending(EvType type, double ts) {
    round_.emplace_back();
    Pending& p = round_.back();
    p.e.type = type;
    p.e.ts = ts;
    return p;
  }

  // What disappears when the process exits: the mm (exe, cmdline), open files,
  // cwd and, on cgroup v1, the cgroup. Read by the exec's per-CPU thread when
  // it has one, else here.
  void ReadExecVolatile(Pending& p) {
    Event& e = p.e;
    ProcEntry& known = Entry(e.pid);
    p.gen = known.gen;
    p.knownPpid = known.ppid;
    p.knownUid = known.uid;
    p.knownCg = known.cgKnown;
    p.knownId = known.containerId;
    if (ClaimCpuRead(p)) return;
    ReadShortLived(p, known.cgTrusted && !known.containerId.empty(), known.cgKnown && !known.containerId.empty());
  }

  // Takes over what the exec's per-CPU thread read, waiting for it while it
  // is behind. False when that CPU has no thread, or the thread passed the
  // exec by (its socket overflowed, its queue was full).
  bool ClaimCpuRead(Pending& p) {
    CpuExecReader* c = p.cpu < cpuReaderOf_.size() ? cpuReaderOf_[p.cpu] : nullptr;
    if (!c) return false;
    CpuReadKey key{p.tsNs, p.e.pid};
    // From the exec's own time, so a reader that fell behind does not wait again for every exec.
    uint64_t deadlineNs = p.tsNs + static_cast<uint64_t>(kCpuReadWaitMs * 1e6);
    for (bool collected = false;; collected = true) {
      // doneNs before collecting: a read it vouches for is then in the thread's queue.
      uint64_t done = c->doneNs.load(std::memory_order_acquire);
      if (collected || cpuReads_.find(key) == cpuReads_.end()) Collect(*c);
      auto it = cpuReads_.find(key);
      if (it != cpuReads_.end()) {
        Take(p, it->second);
        cpuReads_.erase(it);
        return true;
      }
      if (done >= p.tsNs || NowNs() >= deadlineNs) return false;
      timespec pause{0, 50000};
      nanosleep(&pause, nullptr);
    }
  }

  void Collect(CpuExecReader& c) {
    std::lock_guard<std::mutex> lk(c.mu);
    for (Pending& r : c.out) {
      CpuReadKey key{r.tsNs, r.e.pid};
      auto ins = cpuReads_.try_emplace(key, std::move(r));
      if (!ins.second && r.dfd >= 0) close(r.dfd);
    }
    c.out.clear();
  }

  // The exec's facts as its per-CPU thread read them; what the stream knew stays.
  static void Take(Pending& p, Pending& c) {
    Event& e = p.e;
    e.exe = std::move(c.e.exe);
    e.exeDeleted = c.e.exeDeleted;
    e.args = std::move(c.e.args);
    e.argsTruncated = c.e.argsTruncated;
    e.resolved = c.e.resolved;
    e.stdioSocket = c.e.stdioSocket;
    e.hasCwd = c.e.hasCwd;
    e.cwd = std::move(c.e.cwd);
    e.comm = std::move(c.e.comm);
    e.ppid = c.e.ppid;
    e.tty = c.e.tty;
    p.dfd = c.dfd;
    c.dfd = -1;
    p.cgOk = c.cgOk;
    p.cgId = std::move(c.cgId);
    p.cmdlineRead = c.cmdlineRead;
    p.statRead = c.statRead;
    p.uidRead = c.uidRead;
    p.readUid = c.readUid;
  }

  // Drops reads no exec message claimed (the reader's socket lost it, or it
  // stopped waiting and read the process itself).
  void SweepCpuReads() {
    if (cpuReaders_.empty()) return;
    for (auto& c : cpuReaders_) Collect(*c);
    uint64_t now = NowNs();
    // Ordered by exec time: the stale ones come first.
    for (auto it = cpuReads_.begin(); it != cpuReads_.end() && now - it->first.first > kCpuReadStaleNs;) {
      if (it->second.dfd >= 0) close(it->second.dfd);
      it = cpuReads_.erase(it);
    }
  }

  // Opens /proc/<pid> (which pins this process: a reused pid gets ESRCH) and
  // reads what the exec needs of what goes away with the process. The cgroup
  // is not read when the process is known to be in a container (its parent
  // was, and a process stays in its parent's container);
  // fallbackInContainer is what the stream knew, for when the cgroup cannot say.
  // On cgroup v1 an exiting task reads as being in "/", hence the cgroup is
  // read with the mm.
  static void ReadShortLived(Pending& p, bool knownInContainer, bool fallbackInContainer) {
    Event& e = p.e;
    if (p.dfd < 0) p.dfd = OpenProcDir(e.pid);
    if (p.dfd < 0) return;
    int dfd = p.dfd;
    bool exeOk = ReadLinkAt(dfd, "exe", e.exe);
    if (exeOk) {
      static const char kDeleted[] = " (deleted)";
      constexpr size_t dl = sizeof kDeleted - 1;
      if (e.exe.size() > dl && e.exe.compare(e.exe.size() - dl, dl, kDeleted) == 0) {
        e.exe.resize(e.exe.size() - dl);
        e.exeDeleted = true;
      }
      if (e.exe.compare(0, 7, "/memfd:") == 0) e.exeDeleted = true;
    }
    // A child's cgroup does not change at exec: one of a container process is
    // that container's. A host process's child may be runc's, which moves into
    // the container between fork and exec, so it is read.
    bool inContainer = knownInContainer;
    if (!inContainer) {
      p.cgOk = ReadContainerId(dfd, p.cgId);
      inContainer = (p.cgOk && !p.cgId.empty()) || fallbackInContainer;
    }
    // The mm is gone, so the process is exiting and its files and folder
    // with it: what stays is stat, until the zombie is reaped.
    if (!exeOk) {
      if (p.statRead == 0) ReadStat(p);
      return;
    }
    // Host processes feed only the docker CLI tracking and ancestry (exe).
    if (!inContainer && !IsDockerCli(e.exe, "")) {
      e.resolved = true;
      return;
    }
    e.resolved = ReadCmdline(p);
    if (!inContainer) return;
    std::string fd;
    e.stdioSocket = (ReadLinkAt(dfd, "fd/0", fd) && fd.compare(0, 7, "socket:") == 0) ||
                    (ReadLinkAt(dfd, "fd/1", fd) && fd.compare(0, 7, "socket:") == 0);
    e.hasCwd = ReadLinkAt(dfd, "cwd", e.cwd);
  }

  // Returns false when the mm was already gone.
  static bool ReadCmdline(Pending& p) {
    Event& e = p.e;
    p.cmdlineRead = true;
    char cmd[kMaxArgBytes + 1];
    ssize_t cn = -1;
    // When stat told where argv lies, it is copied straight from the process's
    // memory: opening /proc/<pid>/cmdline costs a /proc inode more (~5 us per
    // exec in the storm benchmark).
    // Refused (no CAP_SYS_PTRACE, Yama) or gone: the cmdline file decides.
    if (p.argEnd > p.argStart) {
      iovec local{cmd, static_cast<size_t>(std::min<uint64_t>(p.argEnd - p.argStart, sizeof cmd))};
      iovec remote{reinterpret_cast<void*>(p.argStart), local.iov_len};
      cn = process_vm_readv(e.pid, &local, 1, &remote, 1, 0);
    }
    if (cn <= 0) cn = ReadAt(p.dfd, "cmdline", cmd, sizeof cmd);
    if (cn > 0) {
      size_t len = static_cast<size_t>(cn);
      if (len > kMaxArgBytes) {
        len = kMaxArgBytes;
        e.argsTruncated = true;
      }
      size_t i = 0;
      while (i < len) {
        const char* z = static_cast<const char*>(memchr(cmd + i, '\0', len - i));
        size_t end = z ? static_cast<size_t>(z - cmd) : len;
        if (e.args.size() == kMaxArgs) {
          e.argsTruncated = true;
          break;
        }
        e.args.emplace_back(cmd + i, end - i);
        i = end + 1;
      }
      return true;
    }
    // An empty cmdline means either argv was empty (legal, e.g. pwnkit) or
    // the mm is already gone; a second exe read tells the two apart.
    std::string again;
    return cn == 0 && ReadLinkAt(p.dfd, "exe", again);
  }

  // What stays readable until the zombie is reaped, then the stream's facts
  // for whatever could not be read.
  void ReadExecStable(Pending& p) {
    Event& e = p.e;
    bool valid = false;
    if (p.dfd >= 0) {
      int dfd = p.dfd;
      valid = p.statRead == 0 ? ReadStat(p) : p.statRead > 0;
      if (valid) {
        bool container = (p.cgOk && !p.cgId.empty()) || (p.knownCg && !p.knownId.empty());
        if (p.knownUid < 0) e.uid = p.uidRead ? p.readUid : ReadUid(dfd);
        // Who ran the docker CLI: also through sudo (loginuid survives it).
        if (!container && IsDockerCli(e.exe, e.comm)) {
          // Its Docker event follows within milliseconds and needs this run to name the host user: no batching.
          urgent_ = true;
          if (!p.cmdlineRead) e.resolved = ReadCmdline(p) && e.resolved;
          char lu[16];
          ssize_t ln = ReadAt(dfd, "loginuid", lu, sizeof lu - 1);
          if (ln > 0) {
            lu[ln] = '\0';
            e.loginuid = strtoll(lu, nullptr, 10);
          }
        }
      }
      close(dfd);
      p.dfd = -1;
    }
    if (!e.resolved) sh_->unresolved++;
    if (e.uid < 0) e.uid = p.knownUid;
    // An exiting task can already read as being in the root cgroup: that must
    // not demote a process whose parent was in a container.
    bool cgOk = valid && p.cgOk;
    if (cgOk && (!p.cgId.empty() || !p.knownCg || p.knownId.empty())) e.containerId = p.cgId;
    else if (p.knownCg) e.containerId = p.knownId;
    if (e.ppid == 0) e.ppid = p.knownPpid;
    auto it = procs_.find(e.pid);
    if (it == procs_.end() || it->second.gen != p.gen) return;  // exited, or the pid was reused, in this round
    ProcEntry& known = Current(it->second);
    if (cgOk) {
      known.cgKnown = known.cgTrusted = known.cgRead = true;
      known.containerId = e.containerId;
    }
    if (known.uid < 0 && valid) known.uid = e.uid;
    if (e.ppid != 0) known.ppid = e.ppid;
    if (!cpuReaders_.empty()) Share(e.pid, known);
  }

  // Reads /proc/<pid>/stat once; false when unreadable or another process's.
  static bool ReadStat(Pending& p) {
    char st[1024];
    ssize_t sn = ReadAt(p.dfd, "stat", st, sizeof st - 1);
    bool valid = sn > 0 && ParseStat(st, static_cast<size_t>(sn), p);
    p.statRead = valid ? 1 : -1;
    return valid;
  }

  static int64_t ReadUid(int dfd) {
    char status[4096];
    ssize_t n = ReadAt(dfd, "status", status, sizeof status - 1);
    if (n <= 0) return -1;
    status[n] = '\0';
    const char* u = strstr(status, "\nUid:");
    unsigned ruid;
    return u && sscanf(u + 5, "%u", &ruid) == 1 ? static_cast<int64_t>(ruid) : -1;
  }

  // Fills comm, ppid and tty from /proc/<pid>/stat. Returns false when the pid
  // was already reused by a process started after the exec event, in which
  // case everything read so far belongs to someone else and is discarded.
  static bool ParseStat(char* st, size_t n, Pending& pd) {
    Event& e = pd.e;
    st[n] = '\0';
    char* open = strchr(st, '(');
    char* close = strrchr(st, ')');
    if (!open || !close || close < open) return true;
    std::string comm(open + 1, static_cast<size_t>(close - open - 1));
    // Fields after "(comm)": 3 state, 4 ppid, 7 tty_nr, 22 starttime, 48 arg_start, 49 arg_end.
    char* p = close + 2;
    char* save = nullptr;
    int field = 3;
    long long ppid = 0, tty = 0;
    unsigned long long start = 0, argStart = 0, argEnd = 0;
    for (char* tok = strtok_r(p, " ", &save); tok && field <= 49; tok = strtok_r(nullptr, " ", &save), ++field) {
      if (field == 4) ppid = strtoll(tok, nullptr, 10);
      else if (field == 7) tty = strtoll(tok, nullptr, 10);
      else if (field == 22) start = strtoull(tok, nullptr, 10);
      else if (field == 48) argStart = strtoull(tok, nullptr, 10);
      else if (field == 49) argEnd = strtoull(tok, nullptr, 10);
    }
    static const long hz = sysconf(_SC_CLK_TCK);
    if (field > 22 && hz > 0) {
      // starttime is CLOCK_BOOTTIME-based and truncated to ticks; the event
      // timestamp is CLOCK_MONOTONIC.
      double startMs = static_cast<double>(start) * 1000.0 / static_cast<double>(hz);
      double bootSkew = NowMs(CLOCK_BOOTTIME) - NowMs(CLOCK_MONOTONIC);
      if (startMs - bootSkew > static_cast<double>(pd.tsNs) / 1e6 + 1.0) {
        e.exe.clear();
        e.args.clear();
        e.cwd.clear();
        e.exeDeleted = e.argsTruncated = e.stdioSocket = e.hasCwd = false;
        e.resolved = false;
        return false;
      }
    }
    e.comm = std::move(comm);
    e.ppid = static_cast<int32_t>(ppid);
    e.tty = static_cast<int32_t>(tty);
    if (field > 49) {
      pd.argStart = argStart;
      pd.argEnd = argEnd;
    }
    return true;
  }

  void Push(Event&& e) {
    double tsMono = e.ts - clockOffsetMs_;
    sh_->received++;
    {
      std::lock_guard<std::mutex> lk(sh_->mu);
      if (sh_->queue.size() >= sh_->queueCap) {
        sh_->queueDrops++;
        return;
      }
      sh_->queue.push_back(std::move(e));
    }
    // From the event's own time: a reader that drains every few ms must not add that to the flush delay.
    if (unnotified_++ == 0) firstUnnotifiedMs_ = std::min(NowMs(CLOCK_MONOTONIC), tsMono);
  }

  void Notify() {
    {
      std::lock_guard<std::mutex> lk(sh_->mu);
      if (sh_->queue.empty() || sh_->notifyPending || sh_->closed) return;
      sh_->notifyPending = true;
    }
    Post(sh_);
  }

  // Any thread; the caller has set notifyPending.
  static void Post(const std::shared_ptr<Shared>& sh) {
    std::shared_ptr<Shared> ref = sh;
    if (sh->tsfn.NonBlockingCall([ref](Napi::Env env, Napi::Function cb) { Drain(env, cb, ref); }) != napi_ok) {
      std::lock_guard<std::mutex> lk(sh->mu);
      sh->notifyPending = false;
    }
  }

  // ------------------------------------------------------------- JS thread

  static void Drain(Napi::Env env, Napi::Function cb, const std::shared_ptr<Shared>& sh) {
    std::vector<Event> batch;
    bool more;
    {
      std::lock_guard<std::mutex> lk(sh->mu);
      if (sh->closed) return;
      size_t n = std::min(sh->batchMax, sh->queue.size());
      batch.reserve(n);
      for (size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(sh->queue.front()));
        sh->queue.pop_front();
      }
      more = !sh->queue.empty();
      // Cleared under the lock so the reader either sees it set (and relies on
      // us) or cleared (and posts a new call).
      sh->notifyPending = more;
    }
    if (more) Post(sh);
    if (batch.empty()) return;
    Napi::HandleScope scope(env);
    Napi::Float64Array nums = Napi::Float64Array::New(env, batch.size() * kSlots);
    size_t nstr = 0;
    for (const Event& e : batch)
      if (e.type == EvType::Exec) nstr += 4 + e.args.size();
    Napi::Array strs = Napi::Array::New(env, nstr);
    // Execs in a batch mostly share a container, a program, a folder: one JS
    // string each (less to allocate and collect).
    struct Last {
      const std::string* s = nullptr;
      napi_value v = nullptr;
    } last[4];
    uint32_t si = 0;
    auto str = [&](const std::string& s, Last* l) {
      if (!l) {
        strs.Set(si++, Napi::String::New(env, s));
        return;
      }
      if (!l->s || *l->s != s) *l = {&s, Napi::String::New(env, s)};
      strs.Set(si++, l->v);
    };
    double* d = nums.Data();
    for (const Event& e : batch) {
      d[kSlotType] = static_cast<double>(e.type);
      d[kSlotTs] = e.ts;
      d[kSlotPid] = e.pid;
      d[kSlotPpid] = e.ppid;
      d[kSlotUid] = static_cast<double>(e.uid);
      d[kSlotLoginuid] = static_cast<double>(e.loginuid);
      d[kSlotTty] = e.tty;
      d[kSlotExitCode] = e.exitCode;
      d[kSlotSignal] = e.signal;
      d[kSlotFlags] = (e.exeDeleted ? kFlagExeDeleted : 0) | (e.argsTruncated ? kFlagArgsTruncated : 0) |
                      (e.stdioSocket ? kFlagStdioSocket : 0) | (e.resolved ? kFlagResolved : 0) |
                      (e.hasCwd ? kFlagHasCwd : 0);
      d[kSlotArgc] = static_cast<double>(e.args.size());
      d += kSlots;
      if (e.type != EvType::Exec) continue;
      str(e.exe, &last[0]);
      str(e.comm, &last[1]);
      str(e.cwd, &last[2]);
      str(e.containerId, &last[3]);
      for (const std::string& a : e.args) str(a, nullptr);
    }
    sh->delivered += batch.size();
    try {
      cb.Call({nums, strs});
    } catch (const Napi::Error& err) {
      err.ThrowAsJavaScriptException();  // surfaces as an uncaught exception
    }
  }

  // config
  int rcvbufReq_ = 16 * 1024 * 1024;
  double flushMs_ = 30;
  bool realtime_ = true;
  Napi::FunctionReference callback_;
  std::shared_ptr<Shared> sh_;

  // run state (JS thread)
  bool running_ = false;
  bool hookRegistered_ = false;
  int execSock_ = -1, restSock_ = -1, wakeFd_ = -1;
  std::thread thread_;
  bool perCpuReaders_ = true;
  std::vector<std::unique_ptr<CpuExecReader>> cpuReaders_;  // set before the threads start, cleared after they end
  std::vector<CpuExecReader*> cpuReaderOf_;
  bool lazyExecs_ = false;          // every CPU has a per-CPU thread: the reader need not wake per exec

  std::map<CpuReadKey, Pending> cpuReads_;  // collected from the per-CPU threads (reader thread only)
  // What the per-CPU threads may know of a process (the reader writes, they try to read)
  std::mutex sharedMu_;
  std::unordered_map<int32_t, SharedFacts> sharedFacts_;
  std::atomic<bool> stopReq_{false};

  // subscription handshake
  std::mutex ackMu_;
  std::condition_variable ackCv_;
  bool ackSeen_ = false;
  uint32_t ackErr_ = 0;
  uint32_t listenAck_ = 0;

  // reader-thread state
  std::vector<SeqState> seqs_;
  std::unordered_map<int32_t, ProcEntry> procs_;
  std::vector<Pending> round_;
  std::vector<Msg> msgs_;  // this round's messages
  std::vector<Msg> held_;  // rest-socket messages stamped after the exec socket was read
  size_t pendingGaps_ = 0;
  double nextGapDueMs_ = INFINITY;
  double roundMs_ = 0;
  uint64_t gen_ = 0;
  uint32_t lossEpoch_ = 1;
  double clockOffsetMs_ = 0;
  size_t unnotified_ = 0;
  bool urgent_ = false;  // something JS should have now, not at the next flush
  double firstUnnotifiedMs_ = 0;
};

// Exposed so the parser can be tested against cgroup layouts this host lacks.
Napi::Value ContainerIdFromCgroupJs(const Napi::CallbackInfo& info) {
  std::string text = info[0].ToString().Utf8Value();
  return Napi::String::New(info.Env(), ContainerIdFromCgroup(text.data(), text.size()));
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  exports.Set("containerIdFromCgroup", Napi::Function::New(env, ContainerIdFromCgroupJs, "containerIdFromCgroup"));
  return Connector::Init(env, exports);
}

}  // namespace

NODE_API_MODULE(proc_connector, InitModule)
