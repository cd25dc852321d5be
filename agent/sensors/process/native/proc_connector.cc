// Linux process-events connector (NETLINK_CONNECTOR / CN_IDX_PROC) reader.
//
// A native thread receives fork/exec/exit events and, for exec, reads
// /proc/<pid> immediately (short-lived processes are gone by the time JS could
// look). Events go to a bounded queue; JS gets them in batches through a
// ThreadSafeFunction (at most one call in flight, flushed every few ms),
// never one call per event.

#include <napi.h>
#include <uv.h>

#include <fcntl.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <deque>
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
constexpr size_t kRoundMax = 64;  // messages per receive round (bounds open dirfds too)
constexpr int kAckTimeoutMs = 1500;
constexpr int kFifoPriority = 1;  // lowest RT priority already preempts every CFS task
constexpr uint32_t kMaxCpus = 8192;

enum class EvType : uint8_t { Fork, Exec, Exit };

struct Event {
  EvType type;
  double ts = 0;
  int32_t pid = 0;   // fork: child tgid
  int32_t ppid = 0;  // fork: parent tgid; exec: PPid
  uint32_t uid = 0, euid = 0;
  int64_t loginuid = -1;  // -1: not readable
  int32_t tty = 0;
  int32_t exitCode = 0, signal = 0;
  bool exeDeleted = false, argsTruncated = false, stdioSocket = false;
  bool resolved = false, hasCwd = false;
  std::string exe, comm, cwd, containerId;
  std::vector<std::string> args;
};

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

ssize_t ReadAt(int dirfd, const char* name, char* buf, size_t cap) {
  int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = 0;
  while (static_cast<size_t>(n) < cap) {
    ssize_t r = read(fd, buf + n, cap - static_cast<size_t>(n));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && n == 0) n = -1;
    if (r <= 0) break;
    n += r;
  }
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

int OpenProcDir(int pid) {
  char path[32];
  snprintf(path, sizeof path, "/proc/%d", pid);
  return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
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
    flushMs_ = num("flushIntervalMs", 10, 0, 1000);
    Napi::Value rt = o.Get("realtime");
    realtime_ = rt.IsUndefined() ? true : rt.ToBoolean().Value();
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
  }

  ~Connector() override {
    if (running_) Shutdown();
    if (hookRegistered_) napi_remove_env_cleanup_hook(Env(), &Connector::CleanupHook, this);
  }

 private:
  struct ProcEntry {
    int32_t ppid = 0;
    bool cgKnown = false;
    bool cgRead = false;  // read from this process itself, not inherited at fork
    std::string containerId;
  };
  struct Pending {
    Event e;
    int dfd = -1;
    uint64_t tsNs = 0;
    bool cgOk = false;
  };
  struct SeqState {
    bool init = false;
    uint32_t next = 0;
    uint64_t outstanding = 0;  // counted as lost but may still arrive late
  };

  // ------------------------------------------------------------- JS methods

  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (running_) throw Napi::Error::New(env, "proc connector: already started");

    int sock = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_CONNECTOR);
    if (sock < 0) {
      int err = errno;
      throw ErrnoError(env, err, "socket", err == EPROTONOSUPPORT ? "kernel lacks CONFIG_CONNECTOR" : "");
    }
    auto fail = [&](int err, const char* what, const std::string& hint) {
      close(sock);
      return ErrnoError(env, err, what, hint);
    };

    // FORCE bypasses net.core.rmem_max (needs CAP_NET_ADMIN, which we need anyway).
    if (setsockopt(sock, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbufReq_, sizeof rcvbufReq_) != 0)
      setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &rcvbufReq_, sizeof rcvbufReq_);
    int granted = 0;
    socklen_t gl = sizeof granted;
    getsockopt(sock, SOL_SOCKET, SO_RCVBUF, &granted, &gl);
    sh_->rcvbufBytes = static_cast<uint64_t>(granted);

    sockaddr_nl addr{};
    addr.nl_family = AF_NETLINK;
    addr.nl_groups = CN_IDX_PROC;
    if (bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      int err = errno;
      throw fail(err, "bind", err == EPERM ? "joining the proc connector group needs CAP_NET_ADMIN" : "");
    }

    std::random_device rd;
    listenAck_ = rd() & 0x7fffffff;
    if (!SendOp(sock, PROC_CN_MCAST_LISTEN, rd(), listenAck_)) {
      int err = errno;
      throw fail(err, "sendmsg",
                 err == ECONNREFUSED ? "the proc connector exists only in the host network namespace (--network host)"
                                     : "");
    }

    int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake < 0) {
      int err = errno;
      SendOp(sock, PROC_CN_MCAST_IGNORE, 0, 0);
      throw fail(err, "eventfd", "");
    }

    sock_ = sock;
    wakeFd_ = wake;
    stopReq_ = false;
    sh_->schedFifo = false;
    ackSeen_ = false;
    ackErr_ = 0;
    seqs_.clear();
    procs_.clear();
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
    SendOp(sock_, PROC_CN_MCAST_IGNORE, 0, 0);
    stopReq_ = true;
    uint64_t one = 1;
    ssize_t w = write(wakeFd_, &one, sizeof one);
    (void)w;
    if (thread_.joinable()) thread_.join();
    close(sock_);
    close(wakeFd_);
    sock_ = wakeFd_ = -1;
    {
      std::lock_guard<std::mutex> lk(sh_->mu);
      sh_->closed = true;
      sh_->queue.clear();  // stop() discards what JS has not received yet
      sh_->notifyPending = false;
    }
    sh_->tsfn.Release();
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

  // ---------------------------------------------------------- reader thread

  void Run() {
    if (realtime_) {
      sched_param sp{};
      sp.sched_priority = kFifoPriority;
      sh_->schedFifo = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0;
    }
    alignas(nlmsghdr) char buf[8192];
    pollfd fds[2] = {{sock_, POLLIN, 0}, {wakeFd_, POLLIN, 0}};
    while (!stopReq_.load(std::memory_order_relaxed)) {
      // Events are handed to JS at most every flushMs_ (or per full batch):
      // one JS call per event would cost more than reading /proc.
      int timeout = -1;
      if (unnotified_ > 0) {
        double left = firstUnnotifiedMs_ + flushMs_ - NowMs(CLOCK_MONOTONIC);
        timeout = left <= 0 ? 0 : static_cast<int>(left) + 1;
      }
      int pr = poll(fds, 2, timeout);
      if (pr < 0) {
        if (errno == EINTR) continue;
        break;
      }
      if (fds[1].revents) break;
      if (fds[0].revents) ReadSocket(buf, sizeof buf);
      if (unnotified_ > 0 && (unnotified_ >= sh_->batchMax ||
                              NowMs(CLOCK_MONOTONIC) - firstUnnotifiedMs_ >= flushMs_)) {
        unnotified_ = 0;
        Notify();
      }
    }
  }

  // Receives up to kRoundMax messages, then completes them in a second pass:
  // in a burst every exec gets its short-lived /proc entries read before any
  // spends time on the ones that survive until the zombie is reaped.
  void ReadSocket(char* buf, size_t cap) {
    clockOffsetMs_ = NowMs(CLOCK_REALTIME) - NowMs(CLOCK_MONOTONIC);
    for (size_t i = 0; i < kRoundMax && !stopReq_.load(std::memory_order_relaxed); ++i) {
      sockaddr_nl from{};
      socklen_t fl = sizeof from;
      ssize_t n = recvfrom(sock_, buf, cap, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &fl);
      if (n < 0) {
        if (errno == EINTR) continue;
        // One ENOBUFS per overflow episode; the lost count comes from seq gaps.
        if (errno == ENOBUFS) {
          sh_->enobufs++;
          continue;
        }
        break;
      }
      if (from.nl_pid != 0) continue;  // only the kernel may speak here
      int len = static_cast<int>(n);
      for (auto* nh = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(nh, len); nh = NLMSG_NEXT(nh, len)) {
        if (nh->nlmsg_type == NLMSG_ERROR || nh->nlmsg_type == NLMSG_NOOP) continue;
        if (nh->nlmsg_len < NLMSG_LENGTH(sizeof(cn_msg))) continue;
        const auto* cn = static_cast<const cn_msg*>(NLMSG_DATA(nh));
        if (cn->id.idx != CN_IDX_PROC || cn->id.val != CN_VAL_PROC) continue;
        if (NLMSG_LENGTH(sizeof(cn_msg) + cn->len) > nh->nlmsg_len) continue;
        HandleMessage(cn);
      }
    }
    for (Pending& p : round_) {
      if (p.e.type == EvType::Exec) ReadExecStable(p);
      else if (p.e.type == EvType::Exit) procs_.erase(p.e.pid);
      Push(std::move(p.e));
    }
    round_.clear();
  }

  void HandleMessage(const cn_msg* cn) {
    constexpr size_t hdr = offsetof(proc_event, event_data);
    if (cn->len < hdr + sizeof(uint32_t)) return;
    proc_event ev{};
    memcpy(&ev, cn->data, std::min<size_t>(cn->len, sizeof ev));

    if (ev.what == proc_event::PROC_EVENT_NONE) {
      // Older kernels echo our seq with cpu = -1; newer ones (6.18 here) give
      // the ack a per-CPU number like any event, so it counts for gap
      // tracking. Either way only the ack field identifies our request.
      if (ev.cpu != UINT32_MAX) TrackSeq(ev.cpu, cn->seq);
      if (cn->ack == listenAck_ + 1) {
        std::lock_guard<std::mutex> lk(ackMu_);
        ackSeen_ = true;
        ackErr_ = ev.event_data.ack.err;
        ackCv_.notify_all();
      }
      return;
    }
    // Every event type consumes a per-CPU sequence number, so track all of them.
    TrackSeq(ev.cpu, cn->seq);
    double ts = static_cast<double>(ev.timestamp_ns) / 1e6 + clockOffsetMs_;

    switch (ev.what) {
      case proc_event::PROC_EVENT_FORK: {
        if (cn->len < hdr + sizeof(ev.event_data.fork)) return;
        const auto& f = ev.event_data.fork;
        if (f.child_pid != f.child_tgid) return;  // thread
        OnFork(f.parent_tgid, f.child_tgid);
        Event& e = NewPending(EvType::Fork, ts).e;
        e.ppid = f.parent_tgid;
        e.pid = f.child_tgid;
        return;
      }
      case proc_event::PROC_EVENT_EXEC: {
        if (cn->len < hdr + sizeof(ev.event_data.exec)) return;
        Pending& p = NewPending(EvType::Exec, ts);
        p.e.pid = ev.event_data.exec.process_tgid;
        p.tsNs = ev.timestamp_ns;
        ReadExecVolatile(p);
        return;
      }
      case proc_event::PROC_EVENT_EXIT: {
        if (cn->len < hdr + 4 * sizeof(uint32_t)) return;
        const auto& x = ev.event_data.exit;
        if (x.process_pid != x.process_tgid) return;  // thread
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
        sh_->kernelLost += static_cast<uint64_t>(d);
        s.outstanding += static_cast<uint64_t>(d);
      }
      s.next = seq + 1;
    } else if (s.outstanding > 0) {
      // The kernel takes the number with preemption disabled but sends after
      // re-enabling it, so messages of one CPU can arrive slightly out of order.
      s.outstanding--;
      sh_->kernelLost--;
    }
  }

  void OnFork(int32_t parent, int32_t child) {
    ProcEntry& pe = procs_[parent];
    if (!pe.cgRead) {
      // What the parent inherited may be stale (runc init joins the container
      // after its own fork), so read it once while it is surely alive.
      int dfd = OpenProcDir(parent);
      if (dfd >= 0) {
        std::string id;
        if (ReadContainerId(dfd, id)) {
          pe.cgKnown = pe.cgRead = true;
          pe.containerId = std::move(id);
        }
        close(dfd);
      }
    }
    ProcEntry ce;
    ce.ppid = parent;
    ce.cgKnown = pe.cgKnown;
    ce.containerId = pe.containerId;
    procs_[child] = std::move(ce);  // pid reuse: overwrite
  }

  Pending& NewPending(EvType type, double ts) {
    round_.emplace_back();
    Pending& p = round_.back();
    p.e.type = type;
    p.e.ts = ts;
    return p;
  }

  // What disappears when the process exits: the mm (exe, cmdline), open files
  // and cwd.
  void ReadExecVolatile(Pending& p) {
    Event& e = p.e;
    p.dfd = OpenProcDir(e.pid);  // pins this process: a reused pid gets ESRCH
    if (p.dfd < 0) return;
    int dfd = p.dfd;
    bool exeOk = ReadLinkAt(dfd, "exe", e.exe);
    char cmd[kMaxArgBytes + 1];
    ssize_t cn = ReadAt(dfd, "cmdline", cmd, sizeof cmd);
    if (exeOk) {
      static const char kDeleted[] = " (deleted)";
      constexpr size_t dl = sizeof kDeleted - 1;
      if (e.exe.size() > dl && e.exe.compare(e.exe.size() - dl, dl, kDeleted) == 0) {
        e.exe.resize(e.exe.size() - dl);
        e.exeDeleted = true;
      }
      if (e.exe.compare(0, 7, "/memfd:") == 0) e.exeDeleted = true;
    }
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
    }
    // On cgroup v1 hierarchies an exiting task (PF_EXITING) reads as being in
    // "/", so the cgroup is as volatile as the mm: a `docker exec`'d command
    // that exits at once would otherwise fall back to its fork-time cgroup,
    // which is runc's on the host.
    p.cgOk = ReadContainerId(dfd, e.containerId);
    // An empty cmdline means either argv was empty (legal, e.g. pwnkit) or
    // the mm is already gone; a second exe read tells the two apart.
    std::string again;
    e.resolved = exeOk && (cn > 0 || (cn == 0 && ReadLinkAt(dfd, "exe", again)));
    std::string fd;
    e.stdioSocket = (ReadLinkAt(dfd, "fd/0", fd) && fd.compare(0, 7, "socket:") == 0) ||
                    (ReadLinkAt(dfd, "fd/1", fd) && fd.compare(0, 7, "socket:") == 0);
    e.hasCwd = ReadLinkAt(dfd, "cwd", e.cwd);
  }

  // What stays readable until the zombie is reaped, then the fork-time
  // fallbacks for whatever could not be read.
  void ReadExecStable(Pending& p) {
    Event& e = p.e;
    ProcEntry& known = procs_[e.pid];
    bool cgOk = false;
    if (p.dfd >= 0) {
      int dfd = p.dfd;
      char st[1024];
      ssize_t sn = ReadAt(dfd, "stat", st, sizeof st - 1);
      if (sn > 0 && ParseStat(st, static_cast<size_t>(sn), e, p.tsNs)) {
        char status[4096];
        ssize_t n = ReadAt(dfd, "status", status, sizeof status - 1);
        if (n > 0) {
          status[n] = '\0';
          const char* u = strstr(status, "\nUid:");
          if (u) sscanf(u + 5, "%u %u", &e.uid, &e.euid);
        }
        cgOk = p.cgOk;
        // Only host processes need it (who ran the docker CLI); every /proc
        // file opened costs a proc inode, the bulk of the reader's CPU.
        char lu[16];
        ssize_t ln = e.containerId.empty() ? ReadAt(dfd, "loginuid", lu, sizeof lu - 1) : -1;
        if (ln > 0) {
          lu[ln] = '\0';
          e.loginuid = strtoll(lu, nullptr, 10);
        }
      }
      close(dfd);
      p.dfd = -1;
    }
    if (!e.resolved) sh_->unresolved++;
    // An exiting task can already read as being in the root cgroup: that must
    // not demote a process whose parent was in a container.
    if (known.cgKnown && (!cgOk || (e.containerId.empty() && !known.containerId.empty()))) {
      e.containerId = known.containerId;
    } else if (cgOk) {
      known.cgKnown = known.cgRead = true;
      known.containerId = e.containerId;
    }
    if (e.ppid == 0) e.ppid = known.ppid;
    if (e.ppid != 0) known.ppid = e.ppid;
  }

  // Fills comm, ppid and tty from /proc/<pid>/stat. Returns false when the pid
  // was already reused by a process started after the exec event, in which
  // case everything read so far belongs to someone else and is discarded.
  static bool ParseStat(char* st, size_t n, Event& e, uint64_t tsNs) {
    st[n] = '\0';
    char* open = strchr(st, '(');
    char* close = strrchr(st, ')');
    if (!open || !close || close < open) return true;
    std::string comm(open + 1, static_cast<size_t>(close - open - 1));
    // Fields after "(comm)": 3 state, 4 ppid, 7 tty_nr, 22 starttime.
    char* p = close + 2;
    char* save = nullptr;
    int field = 3;
    long long ppid = 0, tty = 0;
    unsigned long long start = 0;
    for (char* tok = strtok_r(p, " ", &save); tok && field <= 22; tok = strtok_r(nullptr, " ", &save), ++field) {
      if (field == 4) ppid = strtoll(tok, nullptr, 10);
      else if (field == 7) tty = strtoll(tok, nullptr, 10);
      else if (field == 22) start = strtoull(tok, nullptr, 10);
    }
    static const long hz = sysconf(_SC_CLK_TCK);
    if (field > 22 && hz > 0) {
      // starttime is CLOCK_BOOTTIME-based and truncated to ticks; the event
      // timestamp is CLOCK_MONOTONIC.
      double startMs = static_cast<double>(start) * 1000.0 / static_cast<double>(hz);
      double bootSkew = NowMs(CLOCK_BOOTTIME) - NowMs(CLOCK_MONOTONIC);
      if (startMs - bootSkew > static_cast<double>(tsNs) / 1e6 + 1.0) {
        e.exe.clear();
        e.args.clear();
        e.cwd.clear();
        e.containerId.clear();
        e.exeDeleted = e.argsTruncated = e.stdioSocket = e.hasCwd = false;
        e.resolved = false;
        return false;
      }
    }
    e.comm = std::move(comm);
    e.ppid = static_cast<int32_t>(ppid);
    e.tty = static_cast<int32_t>(tty);
    return true;
  }

  void Push(Event&& e) {
    sh_->received++;
    {
      std::lock_guard<std::mutex> lk(sh_->mu);
      if (sh_->queue.size() >= sh_->queueCap) {
        sh_->queueDrops++;
        return;
      }
      sh_->queue.push_back(std::move(e));
    }
    if (unnotified_++ == 0) firstUnnotifiedMs_ = NowMs(CLOCK_MONOTONIC);
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
    Napi::Array arr = Napi::Array::New(env, batch.size());
    std::vector<napi_value> keys = KeyValues(env);
    for (size_t i = 0; i < batch.size(); ++i) arr.Set(static_cast<uint32_t>(i), ToJs(env, keys, batch[i]));
    sh->delivered += batch.size();
    try {
      cb.Call({arr});
    } catch (const Napi::Error& err) {
      err.ThrowAsJavaScriptException();  // surfaces as an uncaught exception
    }
  }

  // Property names are created once per env: building ~17 properties per
  // exec from C strings dominated the JS-thread cost.
  enum Key { kType, kTs, kParentPid, kChildPid, kPid, kPpid, kUid, kEuid, kLoginuid, kExe, kExeDeleted,
             kArgs, kArgsTruncated, kComm, kCwd, kTty, kStdioSocket, kContainerId, kResolved, kExitCode,
             kSignal, kFork, kExec, kExit, kKeyCount };

  // Node 20's N-API can only reference objects, so the names live in an array.
  struct Keys {
    Napi::Reference<Napi::Array> names;
  };

  static std::vector<napi_value> KeyValues(Napi::Env env) {
    static const char* const names[kKeyCount] = {
        "type", "ts", "parentPid", "childPid", "pid", "ppid", "uid", "euid", "loginuid", "exe", "exeDeleted",
        "args", "argsTruncated", "comm", "cwd", "tty", "stdioSocket", "containerId", "resolved", "exitCode",
        "signal", "fork", "exec", "exit"};
    Keys* keys = env.GetInstanceData<Keys>();
    if (!keys) {
      Napi::Array arr = Napi::Array::New(env, kKeyCount);
      for (uint32_t i = 0; i < kKeyCount; ++i) arr.Set(i, Napi::String::New(env, names[i]));
      keys = new Keys{Napi::Persistent(arr)};
      env.SetInstanceData<Keys>(keys);
    }
    Napi::Array arr = keys->names.Value();
    std::vector<napi_value> v(kKeyCount);
    for (uint32_t i = 0; i < kKeyCount; ++i) v[i] = arr.Get(i);
    return v;
  }

  static Napi::Object ToJs(Napi::Env env, const std::vector<napi_value>& k, const Event& e) {
    Napi::Object o = Napi::Object::New(env);
    auto set = [&](Key key, napi_value v) { o.Set(k[key], v); };
    auto num = [&](Key key, double v) { set(key, Napi::Number::New(env, v)); };
    auto str = [&](Key key, const std::string& v) { set(key, Napi::String::New(env, v)); };
    auto boo = [&](Key key, bool v) { set(key, Napi::Boolean::New(env, v)); };
    switch (e.type) {
      case EvType::Fork:
        set(kType, k[kFork]);
        num(kTs, e.ts);
        num(kParentPid, e.ppid);
        num(kChildPid, e.pid);
        break;
      case EvType::Exec: {
        set(kType, k[kExec]);
        num(kTs, e.ts);
        num(kPid, e.pid);
        num(kPpid, e.ppid);
        num(kUid, e.uid);
        num(kEuid, e.euid);
        if (e.loginuid >= 0) num(kLoginuid, static_cast<double>(e.loginuid));
        str(kExe, e.exe);
        boo(kExeDeleted, e.exeDeleted);
        Napi::Array args = Napi::Array::New(env, e.args.size());
        for (size_t i = 0; i < e.args.size(); ++i) args.Set(static_cast<uint32_t>(i), Napi::String::New(env, e.args[i]));
        set(kArgs, args);
        boo(kArgsTruncated, e.argsTruncated);
        str(kComm, e.comm);
        if (e.hasCwd) str(kCwd, e.cwd);
        num(kTty, e.tty);
        boo(kStdioSocket, e.stdioSocket);
        str(kContainerId, e.containerId);
        boo(kResolved, e.resolved);
        break;
      }
      case EvType::Exit:
        set(kType, k[kExit]);
        num(kTs, e.ts);
        num(kPid, e.pid);
        num(kExitCode, e.exitCode);
        if (e.signal) num(kSignal, e.signal);
        break;
    }
    return o;
  }

  // config
  int rcvbufReq_ = 16 * 1024 * 1024;
  double flushMs_ = 10;
  bool realtime_ = true;
  Napi::FunctionReference callback_;
  std::shared_ptr<Shared> sh_;

  // run state (JS thread)
  bool running_ = false;
  bool hookRegistered_ = false;
  int sock_ = -1, wakeFd_ = -1;
  std::thread thread_;
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
  double clockOffsetMs_ = 0;
  size_t unnotified_ = 0;
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
