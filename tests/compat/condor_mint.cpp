// condor_mint: mint an IDTOKEN with HTCondor's own library, the way condor_token_create does.
//
// Built by tests/compat/conftest.py with Debian's g++ against the libcondor_utils shipped in the
// `htcondor` wheel. No HTCondor headers are used: the few functions called are declared below
// with exactly the C++ signatures the library exports, so the compiler emits the same mangled
// names (listed next to each declaration; check with `nm -D --defined-only`).
//
// Usage (mirrors condor_token_create's options):
//   condor_mint -identity ID [-key NAME] [-lifetime SECONDS] [-authz AUTHZ]... [-debug]
// Configuration comes from CONDOR_CONFIG (TRUST_DOMAIN, SEC_PASSWORD_DIRECTORY,
// SEC_TOKEN_POOL_SIGNING_KEY_FILE). The token is printed on stdout followed by a newline.
// Exit status: 0 minted, 1 usage error, 2 the library refused to mint (reason on stderr).

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace classad {
class ClassAd;  // only ever passed as a null pointer
}

// HTCondor's error stack. Its default constructor is inline in HTCondor's header: it only sets
// four pointer/int members to zero, which the value-initialisation below reproduces. The padding
// leaves ample room for the real object (4 members, 32 bytes on x86-64).
class CondorError {
public:
    // _ZNK11CondorError11getFullTextB5cxx11Eb
    std::string getFullText(bool want_newline) const;

private:
    unsigned char storage_[256];
};

class Condor_Auth_Passwd {
public:
    // _ZN18Condor_Auth_Passwd14generate_tokenERKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEES7_RKSt6vectorIS5_SaIS5_EElbRS5_iP11CondorErrorPKN7classad7ClassAdE
    static bool generate_token(const std::string &id, const std::string &key_id,
                               const std::vector<std::string> &authz_list, long lifetime,
                               bool capability, std::string &token, int ident, CondorError *err,
                               const classad::ClassAd *extra_claims);
};

void set_priv_initialize();  // _Z19set_priv_initializev
void config();               // _Z6configv
// _Z19dprintf_config_toolPKcS0_S0_  (what dprintf_set_tool_debug() expands to)
int dprintf_config_tool(const char *subsys, const char *flags, const char *logfile);

static void usage(const char *argv0) {
    std::fprintf(stderr,
                 "Usage: %s -identity ID [-key NAME] [-lifetime SECONDS] [-authz AUTHZ]... "
                 "[-debug]\n",
                 argv0);
    std::exit(1);
}

static const char *need_value(int argc, char **argv, int i) {
    if (i + 1 >= argc) {
        std::fprintf(stderr, "%s: %s needs a value\n", argv[0], argv[i]);
        std::exit(1);
    }
    return argv[i + 1];
}

int main(int argc, char **argv) {
    std::string identity;
    bool have_identity = false;
    std::string key = "POOL";  // condor_token_create's default key name
    long lifetime = -1;        // condor_token_create's default: no "exp" claim
    std::vector<std::string> authz;
    bool debug = false;

    for (int i = 1; i < argc; i++) {
        const std::string arg = argv[i];
        if (arg == "-identity") {
            identity = need_value(argc, argv, i++);
            have_identity = true;
        } else if (arg == "-key") {
            key = need_value(argc, argv, i++);
        } else if (arg == "-lifetime") {
            const char *text = need_value(argc, argv, i++);
            char *end = nullptr;
            errno = 0;
            lifetime = std::strtol(text, &end, 10);
            if (errno != 0 || end == text || *end != '\0') {
                std::fprintf(stderr, "%s: invalid -lifetime %s\n", argv[0], text);
                return 1;
            }
        } else if (arg == "-authz") {
            authz.emplace_back(need_value(argc, argv, i++));
        } else if (arg == "-debug") {
            debug = true;
        } else {
            std::fprintf(stderr, "%s: unknown argument %s\n", argv[0], argv[i]);
            usage(argv[0]);
        }
    }
    if (!have_identity) {
        usage(argv[0]);
    }

    // Same start-up sequence as condor_token_create's main().
    set_priv_initialize();
    config();
    if (debug) {
        dprintf_config_tool("TOOL", "D_SECURITY:2", nullptr);
    }

    CondorError *err = new CondorError();  // value-initialised: all members zero
    std::string token;
    if (!Condor_Auth_Passwd::generate_token(identity, key, authz, lifetime, false, token, 0, err,
                                            nullptr)) {
        std::fprintf(stderr, "Failed to generate a token.\n%s\n", err->getFullText(true).c_str());
        return 2;
    }
    std::fwrite(token.data(), 1, token.size(), stdout);
    std::fputc('\n', stdout);
    return std::fflush(stdout) == 0 ? 0 : 2;
}
