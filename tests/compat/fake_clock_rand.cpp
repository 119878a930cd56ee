// LD_PRELOAD shim that makes HTCondor's token minting deterministic, for reproducing the
// reference vectors of shared/FORMATS.md section 7 with condor_mint.
//
//   COMPAT_FAKE_TIME=<unix seconds>   clock_gettime(CLOCK_REALTIME), gettimeofday() and time()
//                                     report this instant (std::chrono::system_clock::now()
//                                     goes through clock_gettime, which is what generate_token
//                                     uses for "iat" and "exp")
//   COMPAT_FAKE_RAND_START=<0..255>   RAND_bytes() fills buffers with START, START+1, ... (mod
//                                     256), continuing across calls; the 16 bytes of the first
//                                     call become the token's "jti"
//
// Unset variables leave the real function in charge. Built with g++ by conftest.py.

#include <dlfcn.h>
#include <sys/time.h>
#include <time.h>

#include <cstdlib>

namespace {

bool fake_time(time_t *out) {
    const char *text = std::getenv("COMPAT_FAKE_TIME");
    if (!text || !*text) return false;
    *out = static_cast<time_t>(std::strtoll(text, nullptr, 10));
    return true;
}

int next_rand = -1;

}  // namespace

extern "C" {

int clock_gettime(clockid_t clock, struct timespec *ts) {
    time_t fixed;
    if ((clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE) && fake_time(&fixed)) {
        ts->tv_sec = fixed;
        ts->tv_nsec = 0;
        return 0;
    }
    using real_t = int (*)(clockid_t, struct timespec *);
    static real_t real = reinterpret_cast<real_t>(dlsym(RTLD_NEXT, "clock_gettime"));
    return real(clock, ts);
}

int gettimeofday(struct timeval *tv, void *tz) {
    time_t fixed;
    if (fake_time(&fixed)) {
        tv->tv_sec = fixed;
        tv->tv_usec = 0;
        return 0;
    }
    using real_t = int (*)(struct timeval *, void *);
    static real_t real = reinterpret_cast<real_t>(dlsym(RTLD_NEXT, "gettimeofday"));
    return real(tv, tz);
}

time_t time(time_t *out) {
    time_t fixed;
    if (fake_time(&fixed)) {
        if (out) *out = fixed;
        return fixed;
    }
    using real_t = time_t (*)(time_t *);
    static real_t real = reinterpret_cast<real_t>(dlsym(RTLD_NEXT, "time"));
    return real(out);
}

int RAND_bytes(unsigned char *buf, int num) {
    const char *text = std::getenv("COMPAT_FAKE_RAND_START");
    if (text && *text) {
        if (next_rand < 0) next_rand = static_cast<int>(std::strtol(text, nullptr, 0)) & 0xff;
        for (int i = 0; i < num; i++) {
            buf[i] = static_cast<unsigned char>(next_rand);
            next_rand = (next_rand + 1) & 0xff;
        }
        return 1;
    }
    using real_t = int (*)(unsigned char *, int);
    static real_t real = reinterpret_cast<real_t>(dlsym(RTLD_NEXT, "RAND_bytes"));
    return real ? real(buf, num) : 0;
}

}  // extern "C"
