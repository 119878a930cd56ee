// condor_handshake: run HTCondor's real IDTOKENS handshake between a client and a server process
// on a 127.0.0.1 loopback port, using HTCondor's own library.
//
// Built by tests/compat/conftest.py with Debian's g++ against the libcondor_utils shipped in the
// `htcondor` wheel. No HTCondor headers are used: the functions called are declared below with
// exactly the C++ signatures the library exports, so the compiler emits the same mangled names
// (listed next to each declaration; check with `nm -D --defined-only`). Objects of HTCondor's
// classes are only ever created by HTCondor's own constructors, into storage sized far beyond
// the real objects (see the PADDING constants).
//
// What runs: the parent loads CONDOR_CONFIG, binds and listens with a ReliSock on 127.0.0.1,
// then forks. The child is the client: it connects a ReliSock and runs
// Condor_Auth_Passwd(sock, 2).authenticate(), which finds its token the way every HTCondor tool
// does (SEC_TOKEN_DIRECTORY, e.g. from _CONDOR_SEC_TOKEN_DIRECTORY), sends header.payload and
// proves it holds the signature. The parent is the server: it accepts, runs
// Condor_Auth_Passwd(sock, 2).authenticate() + authenticate_continue() (the daemon-side state
// machine), which derives the HMAC key from the key file named by the token's kid, validates the
// claims (exp, iss, jti, revocation expression, ...) and checks the client's proof.
//
// Usage:
//   condor_handshake [-token-file PATH] [-server-keys K1,K2,...] [-timeout S] [-debug]
//     -token-file   copy PATH into a private directory and point the client's
//                   SEC_TOKEN_DIRECTORY at it (default: whatever the configuration says)
//     -server-keys  key names the client believes the server has (as SecMan would learn them
//                   from the server); tokens with another kid are skipped by the client
//     -debug        HTCondor's D_SECURITY log on stderr
// Output: one JSON object on stdout. Exit status 0 when the server authenticated the client,
// 1 when the handshake failed, 3 on a set-up error.

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

// ---------------------------------------------------------------------------------------------
// Declarations of the HTCondor symbols used (libcondor_utils 25.14.1, libclassad 25.14.1).

namespace classad {
class ClassAd {
public:
    // _ZNK7classad7ClassAd18EvaluateAttrStringERKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEERS6_
    bool EvaluateAttrString(const std::string &attr, std::string &result) const;
};

class ClassAdParser {
public:
    ClassAdParser();  // _ZN7classad13ClassAdParserC1Ev
    // _ZN7classad13ClassAdParser12ParseClassAdERKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEEb
    ClassAd *ParseClassAd(const std::string &text, bool full);

private:
    unsigned char padding_[1 << 16];
};
}  // namespace classad

// See condor_mint.cpp: the real object is four zero-initialised members.
class CondorError {
public:
    // _ZNK11CondorError11getFullTextB5cxx11Eb
    std::string getFullText(bool want_newline) const;

private:
    unsigned char storage_[256];
};

enum condor_protocol { CP_PRIMARY, CP_INVALID_MIN, CP_IPV4, CP_IPV6, CP_INVALID_MAX, CP_PARSE_INVALID };
class condor_sockaddr;

// Sock and ReliSock are declared without data or virtual functions, so the base sits at offset 0
// of the derived object, as it does in HTCondor's (single-inheritance) hierarchy.
class Sock {
public:
    // _ZN4Sock4bindE15condor_protocolbibP15condor_sockaddr
    int bind(condor_protocol proto, bool outbound, int port, bool loopback,
             condor_sockaddr *bind_to);
    int get_port() const;                                // _ZNK4Sock8get_portEv
    long timeout(long seconds);                          // _ZN4Sock7timeoutEl
    void getPolicyAd(classad::ClassAd &ad) const;        // _ZNK4Sock11getPolicyAdERN7classad7ClassAdE
};

class ReliSock : public Sock {
public:
    ReliSock();           // _ZN8ReliSockC1Ev
    int listen();         // _ZN8ReliSock6listenEv
    ReliSock *accept();   // _ZN8ReliSock6acceptEv
    // _ZN8ReliSock7connectEPKcibP11CondorError
    int connect(const char *host, int port, bool non_blocking, CondorError *err);

private:
    unsigned char padding_[1 << 16];
};

class Condor_Auth_Base {
public:
    const char *getRemoteFQU();  // _ZN16Condor_Auth_Base12getRemoteFQUEv
};

class Condor_Auth_Passwd : public Condor_Auth_Base {
public:
    Condor_Auth_Passwd(ReliSock *sock, int version);  // _ZN18Condor_Auth_PasswdC1EP8ReliSocki
    // _ZN18Condor_Auth_Passwd12authenticateEPKcP11CondorErrorb
    int authenticate(const char *remote_host, CondorError *err, bool non_blocking);
    // _ZN18Condor_Auth_Passwd21authenticate_continueEP11CondorErrorb
    int authenticate_continue(CondorError *err, bool non_blocking);
    // _ZN18Condor_Auth_Passwd15set_remote_keysERKSt6vectorINSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEESaIS6_EE
    void set_remote_keys(const std::vector<std::string> &keys);

private:
    unsigned char padding_[1 << 16];
};

void set_priv_initialize();  // _Z19set_priv_initializev
void config();               // _Z6configv
// _Z19dprintf_config_toolPKcS0_S0_  (what dprintf_set_tool_debug() expands to)
int dprintf_config_tool(const char *subsys, const char *flags, const char *logfile);

// Condor_Auth_Passwd(..., 2) is IDTOKENS (version 1 is the old PASSWORD method).
static const int IDTOKENS_VERSION = 2;
// authenticate_continue() return values (Condor_Auth_Passwd::CondorAuthPasswordRetval).
static const int RETVAL_FAIL = 0;
static const int RETVAL_SUCCESS = 1;
static const int RETVAL_WOULD_BLOCK = 2;

// ---------------------------------------------------------------------------------------------

static std::string json_string(const std::string &in) {
    std::string out = "\"";
    for (unsigned char c : in) {
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            if (c < 0x20 || c == 0x7f) {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\u%04x", c);
                out += buf;
            } else {
                out += static_cast<char>(c);  // UTF-8 passes through
            }
        }
    }
    return out + "\"";
}

static int fail_setup(const char *what) {
    std::printf("{\"ok\":false,\"error\":%s}\n", json_string(what).c_str());
    std::fflush(stdout);
    return 3;
}

// Copy a token file into a fresh 0700 directory as a 0600 file (HTCondor skips token files that
// are group/other accessible or owned by someone else) and return the directory.
static bool stage_token_file(const char *path, std::string &dir_out) {
    FILE *in = std::fopen(path, "rb");
    if (!in) return false;
    std::string data;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, in)) > 0) data.append(buf, n);
    std::fclose(in);

    char templ[] = "/tmp/condor_handshake_tokens.XXXXXX";
    if (!mkdtemp(templ)) return false;
    dir_out = templ;
    std::string file = dir_out + "/token";
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) return false;
    bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
    return ::close(fd) == 0 && ok;
}

static void remove_staged(const std::string &dir) {
    if (dir.empty()) return;
    std::string file = dir + "/token";
    ::unlink(file.c_str());
    ::rmdir(dir.c_str());
}

static std::vector<std::string> split_commas(const std::string &text) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= text.size()) {
        size_t comma = text.find(',', start);
        if (comma == std::string::npos) comma = text.size();
        std::string item = text.substr(start, comma - start);
        if (!item.empty()) out.push_back(item);
        start = comma + 1;
    }
    return out;
}

// The client: connect, authenticate, exit with 0 when the client side believes it succeeded.
static int run_client(int port, bool use_server_keys, const std::vector<std::string> &keys,
                      int timeout) {
    ReliSock *sock = new ReliSock();
    sock->timeout(timeout);
    CondorError *err = new CondorError();
    std::string sinful = "<127.0.0.1:" + std::to_string(port) + ">";
    if (!sock->connect(sinful.c_str(), 0, false, err)) {
        std::fprintf(stderr, "client: connect to %s failed: %s\n", sinful.c_str(),
                     err->getFullText(false).c_str());
        return 4;
    }
    Condor_Auth_Passwd *auth = new Condor_Auth_Passwd(sock, IDTOKENS_VERSION);
    if (use_server_keys) auth->set_remote_keys(keys);
    int rc = auth->authenticate("127.0.0.1", err, false);
    if (rc != 1) {
        std::fprintf(stderr, "client: authenticate() returned %d\n", rc);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *token_file = nullptr;
    bool use_server_keys = false;
    std::vector<std::string> server_keys;
    int timeout = 20;
    bool debug = false;

    for (int i = 1; i < argc; i++) {
        const std::string arg = argv[i];
        if ((arg == "-token-file" || arg == "-server-keys" || arg == "-timeout") && i + 1 >= argc) {
            std::fprintf(stderr, "%s: %s needs a value\n", argv[0], argv[i]);
            return 3;
        }
        if (arg == "-token-file") {
            token_file = argv[++i];
        } else if (arg == "-server-keys") {
            use_server_keys = true;
            server_keys = split_commas(argv[++i]);
        } else if (arg == "-timeout") {
            timeout = std::atoi(argv[++i]);
            if (timeout <= 0) timeout = 20;
        } else if (arg == "-debug") {
            debug = true;
        } else {
            std::fprintf(stderr, "Usage: %s [-token-file PATH] [-server-keys K1,K2] [-timeout S] "
                                 "[-debug]\n", argv[0]);
            return 3;
        }
    }

    std::string staged_dir;
    if (token_file) {
        if (!stage_token_file(token_file, staged_dir)) {
            remove_staged(staged_dir);
            return fail_setup("cannot stage the token file");
        }
        // Read by config() below: the client's token directory.
        setenv("_CONDOR_SEC_TOKEN_DIRECTORY", staged_dir.c_str(), 1);
    }

    set_priv_initialize();
    config();
    if (debug) {
        dprintf_config_tool("TOOL", "D_SECURITY:2", nullptr);
    }

    ReliSock *listener = new ReliSock();
    if (!listener->bind(CP_IPV4, false, 0, true, nullptr) || !listener->listen()) {
        remove_staged(staged_dir);
        return fail_setup("cannot listen on 127.0.0.1");
    }
    int port = listener->get_port();
    listener->timeout(timeout);

    std::fflush(stdout);
    std::fflush(stderr);
    pid_t child = fork();
    if (child < 0) {
        remove_staged(staged_dir);
        return fail_setup("fork failed");
    }
    if (child == 0) {
        alarm(timeout + 5);  // never outlive a stuck exchange
        std::_Exit(run_client(port, use_server_keys, server_keys, timeout));
    }

    // The server.
    alarm(timeout + 10);
    int server_rc = RETVAL_FAIL;
    std::string identity;
    bool have_identity = false;
    std::string stage = "accept";
    ReliSock *conn = listener->accept();
    classad::ClassAd *policy = nullptr;
    if (conn) {
        conn->timeout(timeout);
        CondorError *err = new CondorError();
        Condor_Auth_Passwd *auth = new Condor_Auth_Passwd(conn, IDTOKENS_VERSION);
        stage = "authenticate";
        int rc = auth->authenticate("127.0.0.1", err, false);
        if (rc == RETVAL_WOULD_BLOCK) {
            // The daemon side always enters its state machine here.
            stage = "authenticate_continue";
            rc = auth->authenticate_continue(err, false);
            while (rc == RETVAL_WOULD_BLOCK) rc = auth->authenticate_continue(err, false);
        }
        server_rc = rc;
        if (rc == RETVAL_SUCCESS) {
            const char *fqu = auth->getRemoteFQU();
            if (fqu) {
                identity = fqu;
                have_identity = true;
            }
            classad::ClassAdParser *parser = new classad::ClassAdParser();
            policy = parser->ParseClassAd(std::string("[]"), true);
            if (policy) conn->getPolicyAd(*policy);
        }
    }

    int status = 0;
    int client_rc = -1;
    if (waitpid(child, &status, 0) == child) {
        if (WIFEXITED(status)) client_rc = WEXITSTATUS(status);
        else if (WIFSIGNALED(status)) client_rc = 128 + WTERMSIG(status);
    }
    remove_staged(staged_dir);

    std::string out = "{";
    bool ok = server_rc == RETVAL_SUCCESS && have_identity;
    out += "\"ok\":" + std::string(ok ? "true" : "false");
    out += ",\"server_rc\":" + std::to_string(server_rc);
    out += ",\"client_rc\":" + std::to_string(client_rc);
    if (have_identity) out += ",\"identity\":" + json_string(identity);
    if (policy) {
        // What the server learned from the token (Condor_Auth_Passwd::analyze_token).
        static const char *const attrs[] = {"LimitAuthorization", "AuthTokenSubject",
                                            "AuthTokenIssuer", "AuthTokenId", "AuthTokenScopes"};
        out += ",\"policy\":{";
        bool first = true;
        for (const char *attr : attrs) {
            std::string value;
            if (policy->EvaluateAttrString(attr, value)) {
                if (!first) out += ",";
                out += json_string(attr) + ":" + json_string(value);
                first = false;
            }
        }
        out += "}";
    }
    if (!ok) {
        std::string why = conn ? "server rejected the client during " + stage
                               : std::string("no client connection");
        out += ",\"error\":" + json_string(why);
    }
    out += "}\n";
    std::fputs(out.c_str(), stdout);
    std::fflush(stdout);
    return ok ? 0 : 1;
}
