// Force-included (-include) when compiling mlx-c with a libstdc++ that has no
// std::format (GCC 12). mlx-c only formats with plain "{}" placeholders, so
// this defines just enough of std::format for that. With a library that has
// <format> (GCC 13+, libc++), this header defines nothing.
#pragma once
#ifdef __cplusplus
#include <version>
#ifndef __cpp_lib_format
#include <sstream>
#include <string>
#include <string_view>

namespace std {
namespace lmx_format_detail {
inline void format_into(std::ostringstream& out, std::string_view fmt) {
  out << fmt;
}
template <typename T, typename... Rest>
void format_into(std::ostringstream& out, std::string_view fmt, const T& first,
                 const Rest&... rest) {
  auto at = fmt.find("{}");
  if (at == std::string_view::npos) {
    out << fmt;
    return;
  }
  out << fmt.substr(0, at) << first;
  format_into(out, fmt.substr(at + 2), rest...);
}
}  // namespace lmx_format_detail

template <typename... Args>
std::string format(std::string_view fmt, const Args&... args) {
  std::ostringstream out;
  lmx_format_detail::format_into(out, fmt, args...);
  return out.str();
}
}  // namespace std
#endif
#endif
