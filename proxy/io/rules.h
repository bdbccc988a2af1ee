#pragma once
/// @file The packet-filter rules that steer a service's packets into tandem's queue.
///
/// Everything is in table raw, chain TANDEM-Q<queue>, jumped to from PREROUTING: packets of a
/// service get CT --notrack (conntrack must not track, and so not NAT or invalidate, packets whose
/// addresses tandem rewrites) and then NFQUEUE without --queue-bypass (never fail open). Matched:
///   - client to VIP:           -p tcp -d VIP --dport PORT
///   - backend replies, transparent addressing: -p tcp -s BACKEND --sport BPORT (each backend)
///   - backend replies, SNAT addressing:        -p tcp -d SNAT_ADDR --dport MIN:MAX
/// With the kernel fast path (daemon.fastpath), packets it translated carry TANDEM_FP_MARK and
/// leave the chain first, untracked (docs/fastpath.md).
/// iptables (iptables-nft through nft_compat, xt_NFQUEUE) is used because nft's own `queue`
/// statement needs CONFIG_NFT_QUEUE, which not every kernel has.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/core/engine_config.h"

namespace tandem {

enum class RulesMode : uint8_t {
  kIptables,  ///< tandemd installs the rules at startup and removes them at exit
  kNone,      ///< the operator installs them (see conf/rules.iptables)
};

const char* rulesModeName(RulesMode mode) noexcept;
std::optional<RulesMode> parseRulesMode(std::string_view text) noexcept;

/// "TANDEM-Q<queue>": one chain per queue, so two daemons on two queues do not collide.
std::string rulesChain(uint16_t queue);

/// Pure. iptables-restore --noflush input that creates (or empties) the chain, fills it and
/// inserts the jump from raw PREROUTING, as one transaction. IPv4 services only. With
/// `fastpath`, the chain first lets packets the kernel fast path already translated (skb mark
/// TANDEM_FP_MARK) pass untracked and unqueued: `-m mark --mark M -j CT --notrack`, then
/// `-m mark --mark M -j RETURN`.
std::string buildIptablesRules(const EngineConfig& config, uint16_t queue, bool fastpath = false);

/// Pure. Given the output of `iptables-save -t raw`, iptables-restore --noflush input that deletes
/// every rule jumping to the chain and then the chain itself; empty if the chain is absent.
std::string buildIptablesCleanup(std::string_view saved_raw_table, uint16_t queue);

/// Installs and removes the rules with iptables-restore --noflush (posix_spawnp, input on stdin).
/// Every method throws std::runtime_error with the tool's own message on failure.
class IptablesRules {
 public:
  explicit IptablesRules(uint16_t queue, std::string restore_cmd = "iptables-restore",
                         std::string save_cmd = "iptables-save");

  void install(const EngineConfig& config, bool fastpath = false);
  /// Removes the chain and every rule jumping to it, whoever added them: at exit, and at startup
  /// for a chain left behind by a run that could not clean up (SIGKILL, crash). Returns true if
  /// there was something to remove.
  bool remove();

 private:
  void restore(const std::string& text, const char* what);

  uint16_t queue_;
  std::string restore_cmd_;
  std::string save_cmd_;
};

}  // namespace tandem
