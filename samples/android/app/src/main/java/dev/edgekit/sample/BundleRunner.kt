package dev.edgekit.sample

import java.io.File
import org.json.JSONObject
import org.pytorch.executorch.extension.llm.LlmCallback
import org.pytorch.executorch.extension.llm.LlmModule

// edgekit-readme:begin (this part is copied into every Android bundle's README.md)
/** Loads an edgekit Android bundle folder with ExecuTorch's LlmModule; every setting comes from manifest.json. */
class BundleRunner(private val bundleDir: File) {
    private val manifest = JSONObject(File(bundleDir, "manifest.json").readText())

    /** The manifest value at a dotted path, e.g. at("artifact.main"); optAt gives null where it is absent. */
    private fun optAt(path: String): Any? = path.split(".").fold(manifest as Any?) { node, key ->
        (node as? JSONObject)?.opt(key)?.takeUnless { it == JSONObject.NULL }
    }
    private fun at(path: String): Any = optAt(path) ?: error("manifest.json has no $path")

    private val module = LlmModule(
        File(bundleDir, at("artifact.main") as String).absolutePath,     // model.pte
        File(bundleDir, at("tokenizer.file") as String).absolutePath,    // tokenizer.json (HF format)
        (at("generation.temperature") as Number).toFloat(),
    )
    private val maxSeqLen = (at("max_seq_len") as Number).toInt()       // prompt + answer, in tokens

    /** Loads the program (otherwise the first generate() does); 0 means success. */
    fun load(): Int = module.load()

    /** One user turn, answered on its own; streams text pieces to onText. The .pte carries its stop tokens. */
    fun chat(userText: String, onText: (String) -> Unit): Int {
        // the chat template rendered around one user message, so no Jinja engine is needed on the phone
        val prompt = (optAt("tokenizer.chat_format.before") as String? ?: "") + userText +
            (optAt("tokenizer.chat_format.after") as String? ?: "")
        module.resetContext()  // a fresh KV cache for each question
        return module.generate(prompt, maxSeqLen, object : LlmCallback {
            override fun onResult(result: String) = onText(result)
        }, false)
    }

    fun stop() = module.stop()

    /** For the UI: model, quantization, and the ExecuTorch version the bundle was exported for. */
    fun describe(): String =
        "${at("model.name")} · ${at("quant")} · ExecuTorch ${optAt("target.runtime_version") ?: "?"}"
}
// edgekit-readme:end
