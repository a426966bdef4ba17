// The Python Session's native half, shared by the Session and BatchEvaluator bindings.
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "bindings/session_busy.h"
#include "gptj/session.h"

// A Session plus a guard: one session used from two threads at once would corrupt its
// cache, so the second caller gets an exception instead. (The Python Session extends the
// guard over a generator's whole life.)
class PySession {
public:
    PySession(std::shared_ptr<const gptj::Model> model, const gptj::SessionParams & params)
        : session_(std::move(model), params) {}

    class Use {
    public:
        explicit Use(std::atomic<bool> & busy) : busy_(busy) {
            if (busy_.exchange(true)) {
                throw SessionBusy("this Session is already in use by another thread; create one Session per thread");
            }
        }
        ~Use() { busy_.store(false); }
        Use(const Use &) = delete;
        Use & operator=(const Use &) = delete;

    private:
        std::atomic<bool> & busy_;
    };

    gptj::Session & session() { return session_; }
    std::atomic<bool> & busy() { return busy_; }
    std::vector<float> & logits() { return logits_; }

private:
    gptj::Session session_;
    std::atomic<bool> busy_{false};
    std::vector<float> logits_;  // scratch for evaluate_and_sample
};
