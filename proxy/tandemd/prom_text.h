#pragma once
/// @file Prometheus text exposition, appended family by family (the /metrics page's pieces).

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace tandem {

/// Appends Prometheus text: "# HELP", "# TYPE" once per family, then its samples.
class PromText {
 public:
  void family(const char* name, const char* type, const char* help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  void sample(const char* name, uint64_t value, const char* label = nullptr,
              const char* label_value = nullptr) {
    out_ += name;
    if (label != nullptr) {
      out_ += '{';
      out_ += label;
      out_ += "=\"";
      out_ += label_value;
      out_ += "\"}";
    }
    out_ += ' ';
    out_ += std::to_string(value);
    out_ += '\n';
  }
  /// A sample with any number of labels: {{"path", "sync"}, {"where", "kernel"}}.
  void sample(const char* name,
              std::initializer_list<std::pair<const char*, std::string_view>> labels,
              uint64_t value) {
    out_ += name;
    char sep = '{';
    for (const auto& [label, label_value] : labels) {
      out_ += sep;
      out_ += label;
      out_ += "=\"";
      out_ += label_value;
      out_ += '"';
      sep = ',';
    }
    if (labels.size() != 0) out_ += '}';
    out_ += ' ';
    out_ += std::to_string(value);
    out_ += '\n';
  }
  void single(const char* name, const char* type, const char* help, uint64_t value) {
    family(name, type, help);
    sample(name, value);
  }
  /// Text another part already formatted (whole families).
  void append(const std::string& text) { out_ += text; }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

}  // namespace tandem
