#include "status_decode.h"

#include <capnp/compat/json.h>
#include <capnp/message.h>

namespace disagg::rackctl {

bool DecodeStatusJson(const std::string& text, const std::function<void(StatusJson::Reader)>& use) {
  const size_t brace = text.find('{');
  if (brace == std::string::npos) return false;
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<StatusJson>();
  capnp::JsonCodec codec;
  codec.handleByAnnotation<StatusJson>();
  kj::Maybe<kj::Exception> failure = kj::runCatchingExceptions(
      [&] { codec.decode(kj::StringPtr(text.c_str() + brace, text.size() - brace), root); });
  if (failure != nullptr) return false;
  use(root.asReader());
  return true;
}

}  // namespace disagg::rackctl
