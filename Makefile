# omixa — build the C core omixa/core.so for one Lua, run the specs, the demo.
#
#   make                      Lua 5.4 (default)
#   make LUA_VERSION=5.1      5.1, 5.2, 5.3 likewise
#   make LUA=luajit           LuaJIT 2.1
#   make test                 every spec on every Lua, valgrind, luacheck, luarocks
#   make demo                 one image from the stand-in (or the service with OMIXA_API_KEY)
#   make bench [QUICK=1]      omixa against curl and peers (bench/RESULTS.md, bench/results.svg)
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

PKG_CONFIG ?= pkg-config
CC         ?= cc
OPT        ?= -O2 -g
WARN       := -std=c99 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wpointer-arith -Wcast-qual
LUA_CFLAGS  = $(shell $(PKG_CONFIG) --cflags $(LUA_PC) 2>/dev/null)
CURL_CFLAGS = $(shell $(PKG_CONFIG) --cflags libcurl 2>/dev/null)
CURL_LIBS   = $(shell $(PKG_CONFIG) --libs libcurl 2>/dev/null || echo -lcurl)
CFLAGS     ?=
LDFLAGS    ?=
ALL_CFLAGS  = $(WARN) $(OPT) -fPIC -fvisibility=hidden -D_POSIX_C_SOURCE=200809L \
              $(LUA_CFLAGS) $(CURL_CFLAGS) $(CFLAGS)

PREFIX     ?= /usr/local
LIBDIR     ?= $(PREFIX)/lib/lua/$(LUA_ABI)
LUADIR     ?= $(PREFIX)/share/lua/$(LUA_ABI)
BINDIR     ?= $(PREFIX)/bin

SRCS     := $(wildcard src/*.c)
HDRS     := $(wildcard src/*.h)
BUILD    := build/$(TAG)
OBJS     := $(SRCS:src/%.c=$(BUILD)/%.o)
CORE     := $(BUILD)/omixa/core.so

.PHONY: all core test demo bench install uninstall clean lint asan FORCE

all: omixa/core.so

# The working tree's copy, for LUA_CPATH='./?.so;;'; refreshed from the
# target's own build so that switching Lua versions never mixes objects.
omixa/core.so: $(CORE) FORCE
	@mkdir -p omixa
	@cmp -s $(CORE) $@ || cp $(CORE) $@

core: $(CORE)

$(CORE): $(OBJS)
	@mkdir -p $(dir $@)
	$(CC) -shared -o $@ $(OBJS) $(LDFLAGS) $(CURL_LIBS)

$(BUILD)/%.o: src/%.c $(HDRS) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD):
	@mkdir -p $@
	@$(PKG_CONFIG) --exists $(LUA_PC) || { echo "omixa: no pkg-config entry '$(LUA_PC)': install its -dev package (see README)" >&2; exit 1; }

# A build with AddressSanitizer and UBSan, for spec runs under LD_PRELOAD.
asan:
	$(MAKE) TAG=$(TAG)-asan BUILD=build/$(TAG)-asan OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	        LDFLAGS="-fsanitize=address,undefined" core

test:
	@sh spec/run-all

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

install: all
	install -d $(DESTDIR)$(LIBDIR)/omixa $(DESTDIR)$(LUADIR)/omixa $(DESTDIR)$(BINDIR)
	install -m 0755 $(CORE) $(DESTDIR)$(LIBDIR)/omixa/core.so
	cd lua && find omixa -type d -exec install -d $(DESTDIR)$(LUADIR)/{} \;
	cd lua && find omixa -type f -exec install -m 0644 {} $(DESTDIR)$(LUADIR)/{} \;
	sed '1s|.*|#!/usr/bin/env $(LUA)|' bin/omixa > $(DESTDIR)$(BINDIR)/omixa
	chmod 0755 $(DESTDIR)$(BINDIR)/omixa

uninstall:
	rm -rf $(DESTDIR)$(LIBDIR)/omixa/core.so $(DESTDIR)$(LUADIR)/omixa $(DESTDIR)$(BINDIR)/omixa

clean:
	rm -rf build omixa out
