# omixa — build the C core build/<tag>/omixa/core.so for one Lua, run the specs, the demo.
#
#   make                      Lua 5.4 (default)
#   make LUA_VERSION=5.1      5.1, 5.2, 5.3 likewise
#   make LUA=luajit           LuaJIT 2.1
#   make BACKEND=portable     the event backend (src/event.h): epoll on Linux and
#                             portable elsewhere by default; BACKEND=portable|kqueue|epoll
#                             forces one, built in build/<tag>-<backend>/
#   make test                 every spec on every Lua, valgrind, ASan, luacheck, luarocks, fuzzers
#   make check-hosts          LÖVE, Luanti and Neovim for real, each getting a 20 MB image (spec/hosts/check)
#   make demo                 one image from the stand-in (or the service with OMIXA_API_KEY)
#   make bench [QUICK=1]      omixa against curl and peers (bench/RESULTS.md, bench/results.svg)
#   make asan / test-asan     a core with ASan + UBSan; every spec on Lua 5.4 against it
#   make fuzz                 the libFuzzer targets fuzz/fuzz_*.c into build/fuzz/ (clang)
#   make fuzz-run FUZZ_SECONDS=60   run each target that long on a copy of its corpus
#   make install PREFIX=/usr/local DESTDIR=

LUA_VERSION ?= 5.4
ifeq ($(LUA),luajit)
  LUA_PC    := luajit
  LUA_ABI   := 5.1
  TAG       := luajit
else
  LUA       ?= lua$(LUA_VERSION)
  LUA_PC    := lua$(LUA_VERSION)
  LUA_ABI   := $(LUA_VERSION)
  TAG       := lua$(LUA_VERSION)
endif

# The event backend, when forced: its own build directory.
BACKEND ?=
ifneq ($(BACKEND),)
  ifneq ($(filter-out epoll kqueue portable,$(BACKEND)),)
    $(error BACKEND must be epoll, kqueue or portable (got $(BACKEND)))
  endif
  TAG := $(TAG)-$(BACKEND)
  BACKEND_DEF := -DOMX_BACKEND_$(shell echo $(BACKEND) | tr a-z A-Z)
endif

# The system, for the module's link flags (see README "Platforms"): a Linux
# or BSD shared object; a macOS bundle whose Lua symbols the interpreter
# provides; a Windows DLL linked against the Lua DLL (MSYS2/MinGW-w64).
UNAME_S := $(shell uname -s 2>/dev/null || echo unknown)
SO      := so
PIC     := -fPIC
ifeq ($(UNAME_S),Darwin)
  MODULE_LDFLAGS := -bundle -undefined dynamic_lookup
else ifneq ($(filter MINGW% MSYS% CYGWIN%,$(UNAME_S)),)
  SO             := dll
  PIC            :=
  MODULE_LDFLAGS := -shared
  MODULE_LIBS     = $(shell $(PKG_CONFIG) --libs $(LUA_PC) 2>/dev/null)
else
  MODULE_LDFLAGS := -shared
endif

PKG_CONFIG ?= pkg-config
CC         ?= cc
OPT        ?= -O2 -g
WARN       := -std=c99 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wpointer-arith -Wcast-qual
LUA_CFLAGS  = $(shell $(PKG_CONFIG) --cflags $(LUA_PC) 2>/dev/null)
CURL_CFLAGS = $(shell $(PKG_CONFIG) --cflags libcurl 2>/dev/null)
CURL_LIBS   = $(shell $(PKG_CONFIG) --libs libcurl 2>/dev/null || echo -lcurl)
CRYPTO_CFLAGS = $(shell $(PKG_CONFIG) --cflags libcrypto 2>/dev/null)
CRYPTO_LIBS   = $(shell $(PKG_CONFIG) --libs libcrypto 2>/dev/null || echo -lcrypto)
CFLAGS     ?=
LDFLAGS    ?=
ALL_CFLAGS  = $(WARN) $(OPT) $(PIC) -fvisibility=hidden -D_POSIX_C_SOURCE=200809L $(BACKEND_DEF) \
              $(LUA_CFLAGS) $(CURL_CFLAGS) $(CRYPTO_CFLAGS) $(CFLAGS)

PREFIX     ?= /usr/local
LIBDIR     ?= $(PREFIX)/lib/lua/$(LUA_ABI)
LUADIR     ?= $(PREFIX)/share/lua/$(LUA_ABI)
BINDIR     ?= $(PREFIX)/bin

SRCS     := $(wildcard src/*.c)
HDRS     := $(wildcard src/*.h)
BUILD    := build/$(TAG)
OBJS     := $(SRCS:src/%.c=$(BUILD)/%.o)
CORE     := $(BUILD)/omixa/core.$(SO)

.PHONY: all core test check-hosts demo bench install uninstall clean lint asan test-asan fuzz fuzz-run FORCE

# Each Lua's core stays in its own build/<tag>/ (nothing is copied to the
# top of the tree, so building for one Lua never replaces another's core);
# a run from the checkout finds the right one through lua/omixa/core.lua.
all: core

core: $(CORE)

$(CORE): $(OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(MODULE_LDFLAGS) -o $@ $(OBJS) $(LDFLAGS) $(MODULE_LIBS) $(CURL_LIBS) $(CRYPTO_LIBS)

$(BUILD)/%.o: src/%.c $(HDRS) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD):
	@mkdir -p $@
	@$(PKG_CONFIG) --exists $(LUA_PC) || { echo "omixa: no pkg-config entry '$(LUA_PC)': install its -dev package (see README)" >&2; exit 1; }

# A build with AddressSanitizer and UBSan (and the fault injection of
# src/testhooks.c), and build/<tag>-asan/<lua>, the
# interpreter that runs it (see spec/asan/wrapper). Built with clang by
# default: its UBSan shares the ASan runtime and honours log_path (gcc's
# prints to stderr whatever the options say); ASAN_CC=gcc works too.
ASAN_CC   ?= clang
ASAN_SAN  := -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=undefined,float-cast-overflow
ASAN_DIR  := build/$(TAG)-asan

asan:
	$(MAKE) TAG=$(TAG)-asan BUILD=$(ASAN_DIR) CC="$(ASAN_CC)" OPT="-O1 -g -fno-omit-frame-pointer $(ASAN_SAN) -DOMX_TEST_HOOKS" \
	        LDFLAGS="$(ASAN_SAN) $(if $(findstring clang,$(ASAN_CC)),-shared-libasan)" core
	$(ASAN_CC) -std=c99 -O2 -fPIC -shared -o $(ASAN_DIR)/preload.so spec/asan/preload.c
	@sh spec/asan/wrapper $(ASAN_DIR) $(LUA) $(ASAN_CC)

# Every spec against the sanitized core; any sanitizer report (from this
# Lua or a Lua child) fails the run, see spec/asan/run.
test-asan: asan
	@sh spec/asan/run $(ASAN_DIR)/$(LUA) /usr/bin/busted -o plainTerminal spec

# libFuzzer targets: each fuzz/fuzz_<name>.c becomes build/fuzz/fuzz_<name>,
# linked with an archive of the core's sources built with the same
# sanitizers (so each target pulls in only the parsers it calls).
FUZZ_CC      ?= clang
FUZZ_SAN     := -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=undefined,float-cast-overflow
FUZZ_CFLAGS  := $(WARN) -g -O1 -fno-omit-frame-pointer $(FUZZ_SAN) -D_POSIX_C_SOURCE=200809L \
                -Isrc -Ifuzz $(LUA_CFLAGS) $(CURL_CFLAGS)
LUA_LIBS      = $(shell $(PKG_CONFIG) --libs $(LUA_PC) 2>/dev/null)
FUZZ_DIR     := build/fuzz
FUZZ_TARGETS := $(patsubst fuzz/%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_BINS    := $(FUZZ_TARGETS:%=$(FUZZ_DIR)/%)
FUZZ_LIB     := $(FUZZ_DIR)/libomixa.a
FUZZ_OBJS    := $(SRCS:src/%.c=$(FUZZ_DIR)/obj/%.o)
FUZZ_SECONDS ?= 60

fuzz: $(FUZZ_BINS)

$(FUZZ_DIR)/obj/%.o: src/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_LIB): $(FUZZ_OBJS)
	rm -f $@
	ar rcs $@ $(FUZZ_OBJS)

$(FUZZ_DIR)/fuzz_%: fuzz/fuzz_%.c $(wildcard fuzz/*.h) $(FUZZ_LIB)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_LIB) $(LUA_LIBS) $(CURL_LIBS)

# Each target for FUZZ_SECONDS on a scratch copy of fuzz/corpus/<target>
# (the committed corpus never grows); any crash, leak or UBSan report fails.
fuzz-run: fuzz
	@sh fuzz/run $(FUZZ_SECONDS) $(FUZZ_TARGETS)

test:
	@sh spec/run-all

check-hosts:
	@sh spec/hosts/check

demo:
	@sh .ci/deps demo
	@$(MAKE) -s all
	@sh examples/demo.sh

# Not part of `make test`: about 6 minutes (QUICK=1: about 1) of both cores.
bench:
	@sh .ci/deps bench
	@$(MAKE) -s LUA=lua5.4 LUA_VERSION=5.4 core
	@$(MAKE) -s LUA=luajit core
	@lua5.4 bench/run.lua $(if $(QUICK),--quick)

lint:
	luacheck lua spec bin examples

install: core
	install -d $(DESTDIR)$(LIBDIR)/omixa $(DESTDIR)$(LUADIR)/omixa $(DESTDIR)$(BINDIR)
	install -m 0755 $(CORE) $(DESTDIR)$(LIBDIR)/omixa/core.$(SO)
	cd lua && find omixa -type d -exec install -d $(DESTDIR)$(LUADIR)/{} \;
	cd lua && find omixa -type f ! -path omixa/core.lua -exec install -m 0644 {} $(DESTDIR)$(LUADIR)/{} \;
	sed '1s|.*|#!/usr/bin/env $(LUA)|' bin/omixa > $(DESTDIR)$(BINDIR)/omixa
	chmod 0755 $(DESTDIR)$(BINDIR)/omixa

uninstall:
	rm -rf $(DESTDIR)$(LIBDIR)/omixa/core.$(SO) $(DESTDIR)$(LUADIR)/omixa $(DESTDIR)$(BINDIR)/omixa

clean:
	rm -rf build out omixa/core.so
