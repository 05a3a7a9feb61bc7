import CoreML
import Foundation
import Tokenizers

// edgekit-readme:begin (this part is copied into every iOS bundle's README.md)
/// manifest.json, read by dotted path: manifest.string("artifact.main").
struct Manifest {
    let root: [String: Any]

    init(folder: URL) throws {
        let data = try Data(contentsOf: folder.appending(path: "manifest.json"))
        root = try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
    }

    func at(_ path: String) -> Any? {
        let value = path.split(separator: ".").reduce(root as Any?) { node, key in (node as? [String: Any])?[String(key)] }
        return value is NSNull ? nil : value
    }
    func string(_ path: String) -> String { at(path) as? String ?? "" }
    func int(_ path: String) -> Int { (at(path) as? NSNumber)?.intValue ?? 0 }
    func double(_ path: String) -> Double { (at(path) as? NSNumber)?.doubleValue ?? 0 }
    func ints(_ path: String) -> [Int] { (at(path) as? [NSNumber])?.map(\.intValue) ?? [] }
}

/// Loads an edgekit iOS bundle folder: the .mlpackage with Core ML (its KV cache is an MLState), the tokenizer
/// with swift-transformers. Inputs `tokens` int32 [1, T] and `input_pos` int32 [T]; output `logits` fp16 [1, T|1, V].
final class BundleRunner {
    let manifest: Manifest
    private let model: MLModel
    private let tokenizer: Tokenizer

    init(folder: URL) async throws {
        manifest = try Manifest(folder: folder)
        let compiled = try await MLModel.compileModel(at: folder.appending(path: manifest.string("artifact.main")))
        let config = MLModelConfiguration()
        config.computeUnits = .cpuAndNeuralEngine
        model = try MLModel(contentsOf: compiled, configuration: config)
        tokenizer = try await AutoTokenizer.from(modelFolder: folder)  // tokenizer.json + tokenizer_config.json
    }

    /// One user turn, answered on its own (a fresh state); calls onText with each new piece of text.
    func chat(_ userText: String, onText: (String) -> Void) throws {
        let prompt = (manifest.at("tokenizer.chat_format.before") as? String ?? "") + userText
            + (manifest.at("tokenizer.chat_format.after") as? String ?? "")
        let stopIds = Set(manifest.ints("tokenizer.stop_ids"))
        let maxSeqLen = manifest.int("max_seq_len")
        let temperature = manifest.double("generation.temperature")
        let state = model.makeState()
        var ids = tokenizer.encode(text: prompt, addSpecialTokens: false)
        var logits = try forward(ids, start: 0, state: state)
        var answer: [Int] = []
        var shown = ""
        while answer.count < manifest.int("generation.max_new_tokens") && ids.count < maxSeqLen {
            let next = pick(logits, temperature: temperature)
            if stopIds.contains(next) { break }
            answer.append(next)
            let text = tokenizer.decode(tokens: answer, skipSpecialTokens: true)
            if !text.hasSuffix("\u{FFFD}") { onText(String(text.dropFirst(shown.count))); shown = text }
            logits = try forward([next], start: ids.count, state: state)
            ids.append(next)
        }
    }

    private func forward(_ tokens: [Int], start: Int, state: MLState) throws -> MLMultiArray {
        let n = NSNumber(value: tokens.count)
        let tok = try MLMultiArray(shape: [1, n], dataType: .int32)
        let pos = try MLMultiArray(shape: [n], dataType: .int32)
        for (i, t) in tokens.enumerated() {
            tok[i] = NSNumber(value: t)
            pos[i] = NSNumber(value: start + i)
        }
        let input = try MLDictionaryFeatureProvider(dictionary: ["tokens": tok, "input_pos": pos])
        let output = try model.prediction(from: input, using: state)
        return output.featureValue(for: "logits")!.multiArrayValue!
    }

    /// Greedy at temperature 0, else a sample from softmax(logits / temperature), over the last position.
    private func pick(_ logits: MLMultiArray, temperature: Double) -> Int {
        let vocab = logits.shape[2].intValue
        let offset = (logits.shape[1].intValue - 1) * vocab
        let row = (0..<vocab).map { logits[offset + $0].doubleValue }
        let best = row.indices.max { row[$0] < row[$1] }!
        if temperature <= 0 { return best }
        let weights = row.map { exp(($0 - row[best]) / temperature) }
        var r = Double.random(in: 0..<weights.reduce(0, +))
        for (i, w) in weights.enumerated() { r -= w; if r < 0 { return i } }
        return best
    }
}
// edgekit-readme:end
