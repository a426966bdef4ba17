#include "bindings/bindings.h"


#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gptj/tokenizer/pretokenizer.h"
#include "gptj/tokenizer/vocab.h"


namespace {

// Below this many bytes (or ids) encode/decode keep the GIL: releasing and taking it back costs
// more than the work, and short prompts are the common case.
constexpr size_t kReleaseGilAbove = 4096;

// The UTF-8 of a str (or the bytes of a bytes object). A str holding lone surrogates has no UTF-8
// form: Python's UnicodeEncodeError (a ValueError) propagates rather than a silent substitution.
std::string_view utf8_view(const py::handle & text) {
    if (PyUnicode_Check(text.ptr())) {
        Py_ssize_t size = 0;
        const char * data = PyUnicode_AsUTF8AndSize(text.ptr(), &size);
        if (data == nullptr) throw py::error_already_set();
        return {data, static_cast<size_t>(size)};
    }
    if (PyBytes_Check(text.ptr())) {
        return {PyBytes_AS_STRING(text.ptr()), static_cast<size_t>(PyBytes_GET_SIZE(text.ptr()))};
    }
    throw py::type_error("text must be str or bytes, not " + std::string(py::str(py::type::of(text).attr("__name__"))));
}

}  // namespace

void bind_vocab(py::module_ & m) {
    py::class_<gptj::Vocab, std::shared_ptr<gptj::Vocab>>(m, "Vocab",
                                                          "GPT-2 byte-level BPE vocabulary (C++ engine).")
        .def(py::init([](std::vector<std::string> tokens, std::vector<int32_t> token_types,
                         std::vector<std::string> merges, int32_t bos_id, int32_t eos_id) {
                 gptj::VocabData data;
                 data.tokens = std::move(tokens);
                 data.token_types = std::move(token_types);
                 data.merges = std::move(merges);
                 data.bos_id = bos_id;
                 data.eos_id = eos_id;
                 py::gil_scoped_release release;  // deriving merges from ids takes a while
                 return std::make_shared<gptj::Vocab>(std::move(data));
             }),
             py::arg("tokens"), py::arg("token_types"), py::arg("merges"), py::arg("bos_id"), py::arg("eos_id"))
        .def(
            "encode",
            [](const gptj::Vocab & vocab, const py::object & text, bool special) {
                // The view points into `text`, which the caller keeps alive for the whole call.
                const std::string_view utf8 = utf8_view(text);
                std::optional<py::gil_scoped_release> release;
                if (utf8.size() > kReleaseGilAbove) release.emplace();
                return vocab.encode(utf8, special);
            },
            py::arg("text"), py::arg("special") = false,
            "Token ids of text (str, or UTF-8 bytes). special: map added-token strings to their ids.")
        .def(
            "decode",
            [](const gptj::Vocab & vocab, const py::handle & id_list) {
                const std::vector<int32_t> ids = to_ids(id_list, "ids");
                std::string bytes;
                {
                    std::optional<py::gil_scoped_release> release;
                    if (ids.size() > kReleaseGilAbove) release.emplace();
                    bytes = vocab.decode(ids);
                }
                return py::bytes(bytes);
            },
            py::arg("ids"), "The bytes the ids stand for (may split a UTF-8 character).")
        .def(
            "token_bytes",
            [](const gptj::Vocab & vocab, const py::handle & id) { return py::bytes(vocab.token_bytes(to_int32(id, "token id"))); },
            py::arg("id"))
        .def("token_type",
             [](const gptj::Vocab & vocab, const py::handle & id) {
                 return static_cast<int>(vocab.token_type(to_int32(id, "token id")));
             },
             py::arg("id"))
        .def_static(
            "split_pieces",
            [](const py::object & text) {
                std::vector<std::string_view> pieces;
                gptj::split_gpt2_pieces(utf8_view(text), pieces);
                py::list out;
                for (std::string_view piece : pieces) out.append(py::bytes(piece.data(), piece.size()));
                return out;
            },
            py::arg("text"), "GPT-2's pre-tokenizer alone: the UTF-8 pieces that BPE encodes one by one.")
        .def_property_readonly("n_tokens", &gptj::Vocab::n_tokens)
        .def_property_readonly("bos_id", &gptj::Vocab::bos_id)
        .def_property_readonly("eos_id", &gptj::Vocab::eos_id);
}
